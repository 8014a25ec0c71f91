package service

import (
	"encoding/json"
	"strconv"
	"time"
)

// Time is a timestamp on the wire: seconds since the epoch as a JSON number,
// with a fraction where there is one, as AWS sends it.
type Time struct{ time.Time }

// MarshalJSON encodes t as epoch seconds with millisecond precision.
func (t Time) MarshalJSON() ([]byte, error) {
	ms := t.UnixMilli()
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', -1, 64), nil
}

// Tag is a resource tag as the API spells it. Both members are required;
// a request that leaves one out is refused by validation, which is why
// decoding records which were present.
type Tag struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`

	hasKey, hasValue bool
}

// UnmarshalJSON decodes a tag and notes which members were present.
func (t *Tag) UnmarshalJSON(b []byte) error {
	var raw struct {
		TagKey   *string `json:"TagKey"`
		TagValue *string `json:"TagValue"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*t = Tag{}
	if raw.TagKey != nil {
		t.TagKey, t.hasKey = *raw.TagKey, true
	}
	if raw.TagValue != nil {
		t.TagValue, t.hasValue = *raw.TagValue, true
	}
	return nil
}

// NewTag returns a tag with both members present.
func NewTag(key, value string) Tag {
	return Tag{TagKey: key, TagValue: value, hasKey: true, hasValue: true}
}

// KeyMetadata is DescribeKey's (and CreateKey's) description of a key.
type KeyMetadata struct {
	AWSAccountId          string   `json:"AWSAccountId"`
	Arn                   string   `json:"Arn"`
	CreationDate          Time     `json:"CreationDate"`
	CurrentKeyMaterialId  string   `json:"CurrentKeyMaterialId,omitempty"`
	CustomerMasterKeySpec string   `json:"CustomerMasterKeySpec"`
	DeletionDate          *Time    `json:"DeletionDate,omitempty"`
	Description           string   `json:"Description"`
	Enabled               bool     `json:"Enabled"`
	EncryptionAlgorithms  []string `json:"EncryptionAlgorithms,omitempty"`
	KeyId                 string   `json:"KeyId"`
	KeyManager            string   `json:"KeyManager"`
	MacAlgorithms         []string `json:"MacAlgorithms,omitempty"`
	SigningAlgorithms     []string `json:"SigningAlgorithms,omitempty"`
	KeySpec               string   `json:"KeySpec"`
	KeyState              string   `json:"KeyState"`
	KeyUsage              string   `json:"KeyUsage"`
	MultiRegion           bool     `json:"MultiRegion"`
	Origin                string   `json:"Origin"`
}

// CreateKeyInput is the CreateKey request.
type CreateKeyInput struct {
	Policy                         *string `json:"Policy"`
	Description                    *string `json:"Description"`
	KeyUsage                       *string `json:"KeyUsage"`
	CustomerMasterKeySpec          *string `json:"CustomerMasterKeySpec"`
	KeySpec                        *string `json:"KeySpec"`
	Origin                         *string `json:"Origin"`
	CustomKeyStoreId               *string `json:"CustomKeyStoreId"`
	BypassPolicyLockoutSafetyCheck bool    `json:"BypassPolicyLockoutSafetyCheck"`
	Tags                           []Tag   `json:"Tags"`
	MultiRegion                    bool    `json:"MultiRegion"`
	XksKeyId                       *string `json:"XksKeyId"`
}

// CreateKeyOutput is the CreateKey response.
type CreateKeyOutput struct {
	KeyMetadata KeyMetadata `json:"KeyMetadata"`
}

// DescribeKeyInput is the DescribeKey request.
type DescribeKeyInput struct {
	KeyId       string   `json:"KeyId"`
	GrantTokens []string `json:"GrantTokens"`
}

// DescribeKeyOutput is the DescribeKey response.
type DescribeKeyOutput struct {
	KeyMetadata KeyMetadata `json:"KeyMetadata"`
}

// ListKeysInput is the ListKeys request.
type ListKeysInput struct {
	Limit  *int32  `json:"Limit"`
	Marker *string `json:"Marker"`
}

// KeyListEntry is one key in ListKeys.
type KeyListEntry struct {
	KeyArn string `json:"KeyArn"`
	KeyId  string `json:"KeyId"`
}

// ListKeysOutput is the ListKeys response.
type ListKeysOutput struct {
	Keys       []KeyListEntry `json:"Keys"`
	NextMarker string         `json:"NextMarker,omitempty"`
	Truncated  bool           `json:"Truncated"`
}

// KeyIdInput is the request of EnableKey and DisableKey.
type KeyIdInput struct {
	KeyId string `json:"KeyId"`
}

// EncryptInput is the Encrypt request.
type EncryptInput struct {
	KeyId               string            `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	GrantTokens         []string          `json:"GrantTokens"`
	EncryptionAlgorithm *string           `json:"EncryptionAlgorithm"`
	DryRun              bool              `json:"DryRun"`
}

// EncryptOutput is the Encrypt response.
type EncryptOutput struct {
	CiphertextBlob      []byte `json:"CiphertextBlob"`
	KeyId               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

// DecryptInput is the Decrypt request.
type DecryptInput struct {
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	GrantTokens         []string          `json:"GrantTokens"`
	KeyId               *string           `json:"KeyId"`
	EncryptionAlgorithm *string           `json:"EncryptionAlgorithm"`
	Recipient           any               `json:"Recipient"`
	DryRun              bool              `json:"DryRun"`
	DryRunModifiers     []string          `json:"DryRunModifiers"`
}

// DecryptOutput is the Decrypt response. It carries plaintext: call Zero
// once it has been written.
type DecryptOutput struct {
	KeyId               string `json:"KeyId"`
	Plaintext           []byte `json:"Plaintext"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
	KeyMaterialId       string `json:"KeyMaterialId,omitempty"`
}

// Zero overwrites the plaintext.
func (o *DecryptOutput) Zero() { clear(o.Plaintext) }

// ReEncryptInput is the ReEncrypt request.
type ReEncryptInput struct {
	CiphertextBlob                 []byte            `json:"CiphertextBlob"`
	SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext"`
	SourceKeyId                    *string           `json:"SourceKeyId"`
	DestinationKeyId               string            `json:"DestinationKeyId"`
	DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext"`
	SourceEncryptionAlgorithm      *string           `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm *string           `json:"DestinationEncryptionAlgorithm"`
	GrantTokens                    []string          `json:"GrantTokens"`
	DryRun                         bool              `json:"DryRun"`
	DryRunModifiers                []string          `json:"DryRunModifiers"`
}

// ReEncryptOutput is the ReEncrypt response.
type ReEncryptOutput struct {
	CiphertextBlob                 []byte `json:"CiphertextBlob"`
	SourceKeyId                    string `json:"SourceKeyId"`
	KeyId                          string `json:"KeyId"`
	SourceEncryptionAlgorithm      string `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm string `json:"DestinationEncryptionAlgorithm"`
	SourceKeyMaterialId            string `json:"SourceKeyMaterialId,omitempty"`
	DestinationKeyMaterialId       string `json:"DestinationKeyMaterialId,omitempty"`
}

// GenerateDataKeyInput is the request of GenerateDataKey and
// GenerateDataKeyWithoutPlaintext.
type GenerateDataKeyInput struct {
	KeyId             string            `json:"KeyId"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	NumberOfBytes     *int32            `json:"NumberOfBytes"`
	KeySpec           *string           `json:"KeySpec"`
	GrantTokens       []string          `json:"GrantTokens"`
	Recipient         any               `json:"Recipient"`
	DryRun            bool              `json:"DryRun"`
}

// GenerateDataKeyOutput is the response of GenerateDataKey (with Plaintext)
// and GenerateDataKeyWithoutPlaintext (without). Call Zero once written.
type GenerateDataKeyOutput struct {
	CiphertextBlob []byte `json:"CiphertextBlob"`
	Plaintext      []byte `json:"Plaintext,omitempty"`
	KeyId          string `json:"KeyId"`
	KeyMaterialId  string `json:"KeyMaterialId,omitempty"`
}

// Zero overwrites the data key.
func (o *GenerateDataKeyOutput) Zero() { clear(o.Plaintext) }

// GenerateRandomInput is the GenerateRandom request.
type GenerateRandomInput struct {
	NumberOfBytes    *int32  `json:"NumberOfBytes"`
	CustomKeyStoreId *string `json:"CustomKeyStoreId"`
	Recipient        any     `json:"Recipient"`
}

// GenerateRandomOutput is the GenerateRandom response.
type GenerateRandomOutput struct {
	Plaintext []byte `json:"Plaintext"`
}

// Zero overwrites the random bytes (they may be used as a key).
func (o *GenerateRandomOutput) Zero() { clear(o.Plaintext) }

// GetPublicKeyInput is the GetPublicKey request.
type GetPublicKeyInput struct {
	KeyId       string   `json:"KeyId"`
	GrantTokens []string `json:"GrantTokens"`
}

// GetPublicKeyOutput is the GetPublicKey response.
type GetPublicKeyOutput struct {
	KeyId                 string   `json:"KeyId"`
	PublicKey             []byte   `json:"PublicKey"`
	CustomerMasterKeySpec string   `json:"CustomerMasterKeySpec"`
	KeySpec               string   `json:"KeySpec"`
	KeyUsage              string   `json:"KeyUsage"`
	EncryptionAlgorithms  []string `json:"EncryptionAlgorithms,omitempty"`
	SigningAlgorithms     []string `json:"SigningAlgorithms,omitempty"`
}

// SignInput is the Sign request.
type SignInput struct {
	KeyId            string   `json:"KeyId"`
	Message          []byte   `json:"Message"`
	MessageType      *string  `json:"MessageType"`
	SigningAlgorithm *string  `json:"SigningAlgorithm"`
	GrantTokens      []string `json:"GrantTokens"`
	DryRun           bool     `json:"DryRun"`
}

// SignOutput is the Sign response.
type SignOutput struct {
	KeyId            string `json:"KeyId"`
	Signature        []byte `json:"Signature"`
	SigningAlgorithm string `json:"SigningAlgorithm"`
}

// VerifyInput is the Verify request.
type VerifyInput struct {
	KeyId            string   `json:"KeyId"`
	Message          []byte   `json:"Message"`
	MessageType      *string  `json:"MessageType"`
	Signature        []byte   `json:"Signature"`
	SigningAlgorithm *string  `json:"SigningAlgorithm"`
	GrantTokens      []string `json:"GrantTokens"`
	DryRun           bool     `json:"DryRun"`
}

// VerifyOutput is the Verify response.
type VerifyOutput struct {
	KeyId            string `json:"KeyId"`
	SignatureValid   bool   `json:"SignatureValid"`
	SigningAlgorithm string `json:"SigningAlgorithm"`
}

// GenerateMacInput is the GenerateMac request.
type GenerateMacInput struct {
	KeyId        string   `json:"KeyId"`
	Message      []byte   `json:"Message"`
	MacAlgorithm *string  `json:"MacAlgorithm"`
	GrantTokens  []string `json:"GrantTokens"`
	DryRun       bool     `json:"DryRun"`
}

// GenerateMacOutput is the GenerateMac response.
type GenerateMacOutput struct {
	KeyId        string `json:"KeyId"`
	Mac          []byte `json:"Mac"`
	MacAlgorithm string `json:"MacAlgorithm"`
}

// VerifyMacInput is the VerifyMac request.
type VerifyMacInput struct {
	KeyId        string   `json:"KeyId"`
	Message      []byte   `json:"Message"`
	Mac          []byte   `json:"Mac"`
	MacAlgorithm *string  `json:"MacAlgorithm"`
	GrantTokens  []string `json:"GrantTokens"`
	DryRun       bool     `json:"DryRun"`
}

// VerifyMacOutput is the VerifyMac response.
type VerifyMacOutput struct {
	KeyId        string `json:"KeyId"`
	MacValid     bool   `json:"MacValid"`
	MacAlgorithm string `json:"MacAlgorithm"`
}

// GenerateDataKeyPairInput is the request of GenerateDataKeyPair and
// GenerateDataKeyPairWithoutPlaintext.
type GenerateDataKeyPairInput struct {
	KeyId             string            `json:"KeyId"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	KeyPairSpec       *string           `json:"KeyPairSpec"`
	GrantTokens       []string          `json:"GrantTokens"`
	Recipient         any               `json:"Recipient"`
	DryRun            bool              `json:"DryRun"`
}

// GenerateDataKeyPairOutput is the response of GenerateDataKeyPair (with
// PrivateKeyPlaintext) and GenerateDataKeyPairWithoutPlaintext (without).
// Call Zero once written.
type GenerateDataKeyPairOutput struct {
	PrivateKeyCiphertextBlob []byte `json:"PrivateKeyCiphertextBlob"`
	PrivateKeyPlaintext      []byte `json:"PrivateKeyPlaintext,omitempty"`
	PublicKey                []byte `json:"PublicKey"`
	KeyId                    string `json:"KeyId"`
	KeyPairSpec              string `json:"KeyPairSpec"`
	KeyMaterialId            string `json:"KeyMaterialId,omitempty"`
}

// Zero overwrites the private key.
func (o *GenerateDataKeyPairOutput) Zero() { clear(o.PrivateKeyPlaintext) }

// GetKeyPolicyInput is the GetKeyPolicy request.
type GetKeyPolicyInput struct {
	KeyId      string  `json:"KeyId"`
	PolicyName *string `json:"PolicyName"`
}

// GetKeyPolicyOutput is the GetKeyPolicy response.
type GetKeyPolicyOutput struct {
	Policy     string `json:"Policy"`
	PolicyName string `json:"PolicyName"`
}

// PutKeyPolicyInput is the PutKeyPolicy request.
type PutKeyPolicyInput struct {
	KeyId                          string  `json:"KeyId"`
	PolicyName                     *string `json:"PolicyName"`
	Policy                         *string `json:"Policy"`
	BypassPolicyLockoutSafetyCheck bool    `json:"BypassPolicyLockoutSafetyCheck"`
}

// ListKeyPoliciesInput is the ListKeyPolicies request.
type ListKeyPoliciesInput struct {
	KeyId  string  `json:"KeyId"`
	Limit  *int32  `json:"Limit"`
	Marker *string `json:"Marker"`
}

// ListKeyPoliciesOutput is the ListKeyPolicies response.
type ListKeyPoliciesOutput struct {
	PolicyNames []string `json:"PolicyNames"`
	Truncated   bool     `json:"Truncated"`
}

// GrantConstraints are a grant's encryption context constraints.
type GrantConstraints struct {
	EncryptionContextEquals map[string]string `json:"EncryptionContextEquals,omitempty"`
	EncryptionContextSubset map[string]string `json:"EncryptionContextSubset,omitempty"`
}

// CreateGrantInput is the CreateGrant request.
type CreateGrantInput struct {
	KeyId             string            `json:"KeyId"`
	GranteePrincipal  *string           `json:"GranteePrincipal"`
	RetiringPrincipal *string           `json:"RetiringPrincipal"`
	Operations        []string          `json:"Operations"`
	Constraints       *GrantConstraints `json:"Constraints"`
	GrantTokens       []string          `json:"GrantTokens"`
	Name              *string           `json:"Name"`
	DryRun            bool              `json:"DryRun"`
}

// CreateGrantOutput is the CreateGrant response.
type CreateGrantOutput struct {
	GrantToken string `json:"GrantToken"`
	GrantId    string `json:"GrantId"`
}

// GrantListEntry describes one grant in ListGrants and ListRetirableGrants.
type GrantListEntry struct {
	KeyId             string            `json:"KeyId"`
	GrantId           string            `json:"GrantId"`
	Name              string            `json:"Name,omitempty"`
	CreationDate      Time              `json:"CreationDate"`
	GranteePrincipal  string            `json:"GranteePrincipal"`
	RetiringPrincipal string            `json:"RetiringPrincipal,omitempty"`
	IssuingAccount    string            `json:"IssuingAccount"`
	Operations        []string          `json:"Operations"`
	Constraints       *GrantConstraints `json:"Constraints,omitempty"`
}

// ListGrantsInput is the ListGrants request.
type ListGrantsInput struct {
	KeyId            string  `json:"KeyId"`
	Limit            *int32  `json:"Limit"`
	Marker           *string `json:"Marker"`
	GrantId          *string `json:"GrantId"`
	GranteePrincipal *string `json:"GranteePrincipal"`
}

// ListRetirableGrantsInput is the ListRetirableGrants request.
type ListRetirableGrantsInput struct {
	RetiringPrincipal *string `json:"RetiringPrincipal"`
	Limit             *int32  `json:"Limit"`
	Marker            *string `json:"Marker"`
}

// ListGrantsOutput is the response of ListGrants and ListRetirableGrants.
type ListGrantsOutput struct {
	Grants     []GrantListEntry `json:"Grants"`
	NextMarker string           `json:"NextMarker,omitempty"`
	Truncated  bool             `json:"Truncated"`
}

// RetireGrantInput is the RetireGrant request.
type RetireGrantInput struct {
	GrantToken *string `json:"GrantToken"`
	KeyId      *string `json:"KeyId"`
	GrantId    *string `json:"GrantId"`
	DryRun     bool    `json:"DryRun"`
}

// RevokeGrantInput is the RevokeGrant request.
type RevokeGrantInput struct {
	KeyId   string  `json:"KeyId"`
	GrantId *string `json:"GrantId"`
	DryRun  bool    `json:"DryRun"`
}
