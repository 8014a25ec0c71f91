package api

import (
	"encoding/json"
	"net"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
)

// Auditor records one event per request (audit.Writer). Write returns nil
// only once the record is written; a request whose record cannot be written
// fails with KMSInternalException: no key use goes unrecorded.
type Auditor interface {
	Write(*audit.Event) error
}

// exchange is what one request leaves for its audit record.
type exchange struct {
	target string
	caller *service.Caller
	akid   string // from the Authorization header when authentication failed
	params *auditParams
	out    any
}

// auditParams are the request fields an audit record may show: names,
// algorithms, contexts, ids — never Plaintext, Message, Mac, Signature,
// CiphertextBlob or policies' and keys' contents. Decoding into this struct
// skips every other field without copying it.
type auditParams struct {
	KeyId                          *string           `json:"KeyId,omitempty"`
	SourceKeyId                    *string           `json:"SourceKeyId,omitempty"`
	DestinationKeyId               *string           `json:"DestinationKeyId,omitempty"`
	TargetKeyId                    *string           `json:"TargetKeyId,omitempty"`
	AliasName                      *string           `json:"AliasName,omitempty"`
	EncryptionContext              map[string]string `json:"EncryptionContext,omitempty"`
	SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext,omitempty"`
	DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext,omitempty"`
	EncryptionAlgorithm            *string           `json:"EncryptionAlgorithm,omitempty"`
	SourceEncryptionAlgorithm      *string           `json:"SourceEncryptionAlgorithm,omitempty"`
	DestinationEncryptionAlgorithm *string           `json:"DestinationEncryptionAlgorithm,omitempty"`
	KeySpec                        *string           `json:"KeySpec,omitempty"`
	KeyUsage                       *string           `json:"KeyUsage,omitempty"`
	KeyPairSpec                    *string           `json:"KeyPairSpec,omitempty"`
	NumberOfBytes                  *int64            `json:"NumberOfBytes,omitempty"`
	SigningAlgorithm               *string           `json:"SigningAlgorithm,omitempty"`
	MessageType                    *string           `json:"MessageType,omitempty"`
	MacAlgorithm                   *string           `json:"MacAlgorithm,omitempty"`
	GrantId                        *string           `json:"GrantId,omitempty"`
	GranteePrincipal               *string           `json:"GranteePrincipal,omitempty"`
	RetiringPrincipal              *string           `json:"RetiringPrincipal,omitempty"`
	Operations                     []string          `json:"Operations,omitempty"`
	Name                           *string           `json:"Name,omitempty"`
	PendingWindowInDays            *int64            `json:"PendingWindowInDays,omitempty"`
	RotationPeriodInDays           *int64            `json:"RotationPeriodInDays,omitempty"`
	PolicyName                     *string           `json:"PolicyName,omitempty"`
	TagKeys                        []string          `json:"TagKeys,omitempty"`
	BypassPolicyLockoutSafetyCheck *bool             `json:"BypassPolicyLockoutSafetyCheck,omitempty"`
	DryRun                         *bool             `json:"DryRun,omitempty"`
}

// parameters reads the auditable fields of a request body (nil if it is not
// a JSON object).
func parameters(body []byte) *auditParams {
	var p auditParams
	if json.Unmarshal(body, &p) != nil {
		return nil
	}
	return &p
}

// asMap renders the parameters with CloudTrail's lower-camel names.
func (p *auditParams) asMap() map[string]any {
	if p == nil {
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[strings.ToLower(k[:1])+k[1:]] = v
	}
	return out
}

// event builds the audit record of one request.
func (s *Server) event(c echo.Context, x *exchange, err error) *audit.Event {
	r := c.Request()
	reqID, _ := c.Get(requestIDKey).(string)
	name := strings.TrimPrefix(x.target, "TrentService.")
	ev := &audit.Event{
		EventName: name, AWSRegion: s.region, UserAgent: r.UserAgent(), RequestID: reqID,
		ReadOnly: strings.HasPrefix(name, "Describe") || strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Get"),
	}
	if host, _, e := net.SplitHostPort(r.RemoteAddr); e == nil {
		ev.SourceIPAddress = host
	}
	if x.caller != nil {
		ev.UserIdentity = identity(x.caller)
		ev.RecipientAccountID = x.caller.Account
	} else {
		ev.UserIdentity = audit.UserIdentity{Type: audit.IdentityUnknown, AccessKeyID: x.akid}
	}
	ev.RequestParameters = x.params.asMap()
	if err != nil {
		e := service.AsError(err)
		ev.ErrorCode, ev.ErrorMessage = e.Code, e.Message
	} else {
		ev.ResponseElements = responseElements(x.out)
	}
	for _, arn := range s.resourceARNs(x) {
		acct := ""
		if f := strings.SplitN(arn, ":", 6); len(f) == 6 {
			acct = f[4]
		}
		ev.Resources = append(ev.Resources, audit.Resource{ARN: arn, AccountID: acct, Type: audit.ResourceTypeKey})
	}
	return ev
}

func identity(c *service.Caller) audit.UserIdentity {
	id := audit.UserIdentity{ARN: c.ARN, AccountID: c.Account, AccessKeyID: c.AccessKeyID, Type: audit.IdentityIAMUser}
	switch {
	case strings.HasSuffix(c.ARN, ":root"):
		id.Type, id.PrincipalID = audit.IdentityRoot, c.Account
	case strings.Contains(c.ARN, ":assumed-role/"):
		id.Type = audit.IdentityAssumedRole
		id.PrincipalID = c.ARN[strings.LastIndex(c.ARN, ":")+1:]
	default:
		id.PrincipalID = c.ARN[strings.LastIndex(c.ARN, "/")+1:]
	}
	return id
}

// responseElements: what CloudTrail shows of a response — nothing for the
// cryptographic operations, the key's metadata or the grant's id for the
// management ones; never plaintext, data keys, signatures or tokens.
func responseElements(out any) map[string]any {
	switch o := out.(type) {
	case *service.CreateKeyOutput:
		return map[string]any{"keyMetadata": map[string]any{"keyId": o.KeyMetadata.KeyId, "arn": o.KeyMetadata.Arn,
			"keySpec": o.KeyMetadata.KeySpec, "keyUsage": o.KeyMetadata.KeyUsage, "keyState": o.KeyMetadata.KeyState}}
	case *service.CreateGrantOutput:
		return map[string]any{"grantId": o.GrantId}
	case *service.ScheduleKeyDeletionOutput:
		return map[string]any{"keyId": o.KeyId, "deletionDate": o.DeletionDate, "keyState": o.KeyState}
	}
	return nil
}

// resourceARNs are the keys a request touched: from the response when it
// names them (it does so by ARN), else from the request's key ids.
func (s *Server) resourceARNs(x *exchange) []string {
	switch o := x.out.(type) {
	case *service.EncryptOutput:
		return []string{o.KeyId}
	case *service.DecryptOutput:
		return []string{o.KeyId}
	case *service.ReEncryptOutput:
		return []string{o.SourceKeyId, o.KeyId}
	case *service.GenerateDataKeyOutput:
		return []string{o.KeyId}
	case *service.GenerateDataKeyPairOutput:
		return []string{o.KeyId}
	case *service.SignOutput:
		return []string{o.KeyId}
	case *service.VerifyOutput:
		return []string{o.KeyId}
	case *service.GenerateMacOutput:
		return []string{o.KeyId}
	case *service.VerifyMacOutput:
		return []string{o.KeyId}
	case *service.CreateKeyOutput:
		return []string{o.KeyMetadata.Arn}
	case *service.DescribeKeyOutput:
		return []string{o.KeyMetadata.Arn}
	}
	if x.params == nil || x.caller == nil {
		return nil
	}
	var out []string
	for _, id := range []*string{x.params.KeyId, x.params.SourceKeyId, x.params.DestinationKeyId, x.params.TargetKeyId} {
		if id == nil || *id == "" {
			continue
		}
		switch {
		case strings.HasPrefix(*id, "arn:") && strings.Contains(*id, ":key/"):
			out = append(out, *id)
		case !strings.HasPrefix(*id, "arn:") && !strings.HasPrefix(*id, "alias/"):
			out = append(out, "arn:"+s.partition+":kms:"+s.region+":"+x.caller.Account+":key/"+*id)
		}
	}
	return out
}

// accessKeyOf reads the access key id from a SigV4 Authorization header, for
// the record of a request whose authentication failed.
func accessKeyOf(h string) string {
	_, rest, ok := strings.Cut(h, "Credential=")
	if !ok {
		return ""
	}
	akid, _, _ := strings.Cut(rest, "/")
	if len(akid) > 128 {
		return ""
	}
	return akid
}
