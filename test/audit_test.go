package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/hsmkms/hsmkms/audit"
	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
)

// TestAuditTrail drives allowed, denied and failed requests (and one that
// fails authentication) through a server with an audit log, then checks the
// log: one CloudTrail-shaped event per request with the right fields, no
// plaintext anywhere, a chain and signatures that verify with the token's
// audit key, and tampering found.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "audit.log")
	var w *audit.Writer
	var pub []byte
	s := startServerAudited(t, map[string]service.Caller{"AKIDAPP": {Account: mainAccount, ARN: appARN}},
		func(svc *service.Service) api.Auditor {
			signer, p, err := svc.AuditKey(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			pub = p
			if w, err = audit.Open(audit.Config{File: file, Signer: signer, PublicKey: pub, CheckpointEvery: 4}); err != nil {
				t.Fatal(err)
			}
			return w
		})
	root, app := s.client(), s.as("AKIDAPP")

	plaintexts := [][]byte{[]byte("audit-plaintext-one"), []byte("audit-plaintext-two")}
	k := createKey(t, root)
	blob := encrypt(t, root, aws.ToString(k.KeyId), plaintexts[0], map[string]string{"case": "audit"})
	decrypt(t, root, blob, map[string]string{"case": "audit"})
	dk, err := root.GenerateDataKey(ctxT(t), &kms.GenerateDataKeyInput{KeyId: k.KeyId, KeySpec: types.DataKeySpecAes256})
	if err != nil {
		t.Fatal(err)
	}
	_, err = app.Encrypt(ctxT(t), &kms.EncryptInput{KeyId: k.Arn, Plaintext: plaintexts[1]})
	wantAPIError(t, err, "AccessDeniedException", 400)
	_, err = newClient(s.URL, mainAKID, "wrong-secret", nil).ListKeys(ctxT(t), &kms.ListKeysInput{})
	wantAPIError(t, err, "InvalidSignatureException", 400)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	secrets := append(plaintexts, dk.Plaintext)
	for _, p := range secrets {
		for _, form := range []string{string(p), base64.StdEncoding.EncodeToString(p)} {
			if bytes.Contains(data, []byte(form)) {
				t.Errorf("the audit log contains a plaintext (%q)", form)
			}
		}
	}

	var events []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if _, cp := m["checkpoint"]; !cp {
			events = append(events, m)
		}
	}
	names := []string{}
	for _, e := range events {
		names = append(names, e["eventName"].(string))
	}
	// CreateKey, a change, is recorded twice: its intent before it
	// commits, then its outcome, which names the intent.
	if want := "CreateKey CreateKey Encrypt Decrypt GenerateDataKey Encrypt ListKeys"; strings.Join(names, " ") != want {
		t.Fatalf("events %v, want %s", names, want)
	}
	str := func(e map[string]any, path ...string) string {
		var v any = e
		for _, p := range path {
			m, _ := v.(map[string]any)
			v = m[p]
		}
		s, _ := v.(string)
		return s
	}
	arn := aws.ToString(k.Arn)
	intent, outcome := events[0], events[1]
	if str(intent, "additionalEventData", "phase") != "intent" || intent["responseElements"] != nil ||
		str(intent, "userIdentity", "arn") != mainARN || str(intent, "requestID") != str(outcome, "requestID") {
		t.Errorf("CreateKey intent %v", intent)
	}
	if rs, _ := intent["resources"].([]any); len(rs) != 1 || rs[0].(map[string]any)["ARN"] != arn {
		t.Errorf("CreateKey intent resources %v, want %s", intent["resources"], arn)
	}
	if str(outcome, "additionalEventData", "intentEventId") != str(intent, "eventID") ||
		str(outcome, "responseElements", "keyMetadata", "arn") != arn {
		t.Errorf("CreateKey outcome %v", outcome)
	}
	events = events[1:]
	for i, e := range events {
		if str(e, "eventSource") != "kms.amazonaws.com" || str(e, "eventVersion") == "" || str(e, "eventID") == "" ||
			str(e, "requestID") == "" || str(e, "awsRegion") != region || str(e, "sourceIPAddress") != "127.0.0.1" {
			t.Errorf("event %d lacks CloudTrail fields: %v", i, e)
		}
	}
	if e := events[1]; str(e, "userIdentity", "arn") != mainARN || str(e, "userIdentity", "type") != "Root" ||
		str(e, "requestParameters", "encryptionContext", "case") != "audit" || str(e, "errorCode") != "" {
		t.Errorf("Encrypt event %v", e)
	}
	if rs, _ := events[1]["resources"].([]any); len(rs) != 1 || rs[0].(map[string]any)["ARN"] != arn {
		t.Errorf("Encrypt event resources %v, want %s", events[1]["resources"], arn)
	}
	if e := events[4]; str(e, "userIdentity", "arn") != appARN || str(e, "errorCode") != "AccessDeniedException" ||
		!strings.Contains(str(e, "errorMessage"), "kms:Encrypt") || e["responseElements"] != nil {
		t.Errorf("denied Encrypt event %v", e)
	}
	if e := events[5]; str(e, "userIdentity", "type") != "Unknown" || str(e, "userIdentity", "accessKeyId") != mainAKID ||
		str(e, "errorCode") != "InvalidSignatureException" || e["readOnly"] != true {
		t.Errorf("failed authentication event %v", e)
	}

	rep, err := audit.Verify([]string{file}, pub)
	if err != nil || rep.Records != 7 || rep.Unsigned != 0 || rep.SignedSeq != rep.LastSeq {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}

	// Tampering: a modified, a deleted and two swapped lines are each found.
	lines := strings.SplitAfter(string(data), "\n")
	for name, tampered := range map[string][]string{
		"modified": replaceLine(lines, 2, strings.Replace(lines[2], `"audit"`, `"other"`, 1)),
		"deleted":  append(append([]string{}, lines[:2]...), lines[3:]...),
		"swapped":  append(append(append([]string{}, lines[:1]...), lines[2], lines[1]), lines[3:]...),
	} {
		bad := filepath.Join(t.TempDir(), name+".log")
		if err := os.WriteFile(bad, []byte(strings.Join(tampered, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := audit.Verify([]string{bad}, pub)
		var ve *audit.VerifyError
		if !errors.As(err, &ve) || ve.Line > 3 {
			t.Errorf("%s: Verify = %v, want the first bad record (by line 3) named", name, err)
		}
	}
}

func replaceLine(lines []string, i int, s string) []string {
	out := append([]string{}, lines...)
	out[i] = s
	return out
}

// failingAuditor refuses every record, or, with broken set, says up front
// that it cannot take any.
type failingAuditor struct{ broken bool }

func (f failingAuditor) Write(*audit.Event) error        { return errors.New("disk full") }
func (f failingAuditor) WriteDurable(*audit.Event) error { return errors.New("disk full") }
func (f failingAuditor) Err() error {
	if f.broken {
		return errors.New("log broken")
	}
	return nil
}

// A request whose audit record cannot be written fails with
// KMSInternalException and returns nothing of its result, and a change whose
// intent record cannot be written is not made; with the log known to be
// broken the operation does not even run.
func TestAuditFailureFailsTheRequest(t *testing.T) {
	t.Parallel()
	for _, broken := range []bool{false, true} {
		var svc *service.Service
		s := startServerAudited(t, nil, func(sv *service.Service) api.Auditor { svc = sv; return failingAuditor{broken: broken} })
		c := s.client()
		out, err := c.CreateKey(ctxT(t), &kms.CreateKeyInput{})
		wantAPIError(t, err, "KMSInternalException", 500)
		if out != nil {
			t.Errorf("broken=%v: a result came back: %+v", broken, out)
		}
		l, err := svc.ListKeys(ctxT(t), service.Caller{Account: mainAccount, ARN: mainARN}, service.ListKeysInput{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Keys) != 0 {
			t.Errorf("broken=%v: %d keys exist, want none: the creator was told the request failed", broken, len(l.Keys))
		}
	}
}
