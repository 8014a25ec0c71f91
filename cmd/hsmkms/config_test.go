package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api"
)

func TestLoopbackOnly(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080": true, "127.9.9.9:1": true, "[::1]:8080": true, "localhost:8080": true,
		"0.0.0.0:8080": false, "[::]:8080": false, "10.0.0.5:8080": false, ":8080": false, "example.com:80": false,
	} {
		if err := loopbackOnly(addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestAccountOf(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"arn:aws:iam::111122223333:user/alice": "111122223333",
		"arn:aws:iam::444455556666:role/app":   "444455556666",
		"arn:aws:iam::1111:user/short":         "",
		"arn:aws:kms::111122223333:key/x":      "",
		"arn:aws:iam::11112222333x:root":       "",
		"arn:aws:iam::111122223333:":           "",
		"not an arn":                           "",
	}
	for arn, want := range cases {
		got, err := accountOf(arn)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("accountOf(%q) = %q, %v; want %q", arn, got, err, want)
		}
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "s")
	os.WriteFile(file, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("HSMKMS_TEST_SECRET", "from-env")
	if s, err := readSecret(file, ""); err != nil || s != "s3cret" {
		t.Errorf("file: %q, %v", s, err)
	}
	if s, err := readSecret("", "HSMKMS_TEST_SECRET"); err != nil || s != "from-env" {
		t.Errorf("env: %q, %v", s, err)
	}
	for name, call := range map[string][2]string{
		"empty file": {empty, ""}, "missing file": {filepath.Join(dir, "nope"), ""},
		"unset env": {"", "HSMKMS_TEST_UNSET"}, "no source": {"", ""},
	} {
		if s, err := readSecret(call[0], call[1]); err == nil {
			t.Errorf("%s: got secret %q, want an error", name, s)
		}
	}
}

func TestServeFlagsAndConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `version: v1
region: eu-west-1
listen: 127.0.0.1:9000
pkcs11:
  token_label: prod
  pin_file: /run/pin
principals:
  - arn: arn:aws:iam::111122223333:user/alice
    access_keys: [{id: AKIAALICE, secret_env: ALICE_SECRET}]
    policies:
      - Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: ["kms:Encrypt", "kms:Decrypt"]
            Resource: "*"
      - {"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"}}
`)
	o, err := parseServeFlags([]string{"--config", good, "--region", "us-west-2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.region != "us-west-2" || o.listen != "127.0.0.1:9000" || o.tokenLabel != "prod" || o.pinFile != "/run/pin" {
		t.Fatalf("options %+v: flags must override the file, the file the defaults", o)
	}
	t.Setenv("ALICE_SECRET", "alice-secret")
	creds, err := o.credentials()
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := creds.Lookup("AKIAALICE"); !ok || string(c.Secret) != "alice-secret" {
		t.Fatalf("credential for AKIAALICE: %+v, %v", c, ok)
	}
	alice, _, _ := creds.Principal("AKIAALICE")
	if id := alice.Identity; len(id) != 2 || len(id[0].Statements) != 1 || !id[0].Statements[0].Allow || id[1].Statements[0].Allow {
		t.Fatalf("alice's identity policies: %+v", id)
	}
	malformedPolicy := write("malformed.yaml", `version: v1
pkcs11: {token_label: x}
principals:
  - arn: arn:aws:iam::111122223333:user/alice
    access_keys: [{id: AKIAALICE, secret_env: ALICE_SECRET}]
    policies: [{Statement: {Effect: Perhaps, Action: "kms:*", Resource: "*"}}]
`)
	o, err = parseServeFlags([]string{"--config", malformedPolicy}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.credentials(); err == nil || !strings.Contains(err.Error(), "policy 1 of arn:aws:iam::111122223333:user/alice") ||
		!strings.Contains(err.Error(), "Effect must be") {
		t.Errorf("malformed identity policy: %v", err)
	}

	bad := []struct{ name, file, want string }{
		{"unknown field", write("unknown.yaml", "version: v1\nlisten_on: x\n"), "listen_on"},
		{"wrong version", write("v2.yaml", "version: v2\n"), "version must be v1"},
		{"no principals", write("none.yaml", "version: v1\npkcs11: {token_label: x}\n"), "no principals"},
	}
	for _, tc := range bad {
		if _, err := parseServeFlags([]string{"--config", tc.file}, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	for name, args := range map[string][]string{
		"dev on a public address": {"--dev", "--listen", "0.0.0.0:8080"},
		"label and serial":        {"--dev", "--token-label", "a", "--token-serial", "b"},
	} {
		if _, err := parseServeFlags(args, io.Discard); err == nil {
			t.Errorf("%s: accepted %v", name, args)
		}
	}
	if _, err := parseServeFlags([]string{}, io.Discard); err == nil || !strings.Contains(err.Error(), "--token-label") {
		t.Errorf("no token and no --dev: %v", err)
	}
	if o, err := parseServeFlags([]string{"--dev"}, io.Discard); err != nil || !o.sessionKeyCopies || o.tokenLabel != "hsmkms-dev" {
		t.Errorf("--dev defaults: %+v, %v", o, err)
	}
}

func TestLimitsFlagsAndConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := write("limits.yaml", `version: v1
pkcs11: {token_label: x}
principals: [{arn: "arn:aws:iam::111122223333:user/a", access_keys: [{id: AKIDA, secret_env: A_SECRET}]}]
limits:
  keys_per_account: 500
  aliases_per_key: 10
`)
	o, err := parseServeFlags([]string{"--config", file, "--aliases-per-key", "20", "--grants-per-key", "30"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := (service.Limits{KeysPerAccount: 500, AliasesPerKey: 20, GrantsPerKey: 30}); o.limits != want {
		t.Fatalf("limits %+v, want %+v: flags override the file, the file the defaults", o.limits, want)
	}
	if o, err := parseServeFlags([]string{"--dev"}, io.Discard); err != nil || o.limits != (service.Limits{}) {
		t.Fatalf("no limits given: %+v, %v (zero: the service applies AWS's)", o.limits, err)
	}
	for name, args := range map[string][]string{
		"negative flag":        {"--dev", "--keys-per-account", "-1"},
		"negative in the file": {"--dev", "--config", write("negative.yaml", "version: v1\nlimits: {grants_per_key: -5}\n")},
		"unknown limit":        {"--dev", "--config", write("unknown.yaml", "version: v1\nlimits: {keys: 5}\n")},
	} {
		if _, err := parseServeFlags(args, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRateLimitFlagsAndConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	o, err := parseServeFlags([]string{"--dev"}, io.Discard)
	if err != nil || o.rateLimits.resolved != api.DefaultRateLimits {
		t.Fatalf("no rate limits given: %+v, %v; want AWS's quotas %+v", o.rateLimits.resolved, err, api.DefaultRateLimits)
	}
	file := write("rates.yaml", `version: v1
rate_limits:
  per_source: 500
  symmetric: 100
  rsa: 0          # off
  list: 2.5
`)
	o, err = parseServeFlags([]string{"--dev", "--config", file, "--rate-limit-source-rps", "50"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := api.DefaultRateLimits
	want.PerSource, want.Symmetric, want.RSA, want.List = 50, 100, 0, 2.5
	if o.rateLimits.resolved != want {
		t.Fatalf("rate limits %+v, want %+v: the flag overrides the file, the file the defaults, 0 is off", o.rateLimits.resolved, want)
	}
	for name, args := range map[string][]string{
		"--rate-limits=off":          {"--dev", "--config", file, "--rate-limits=off"},
		"enabled: false in the file": {"--dev", "--config", write("off.yaml", "version: v1\nrate_limits: {enabled: false, symmetric: 7}\n")},
	} {
		if o, err := parseServeFlags(args, io.Discard); err != nil || o.rateLimits.resolved != (api.RateLimits{}) {
			t.Errorf("%s: %+v, %v; want every limit off", name, o.rateLimits.resolved, err)
		}
	}
	disabled := write("disabled.yaml", "version: v1\nrate_limits: {enabled: false}\n")
	if o, err := parseServeFlags([]string{"--dev", "--config", disabled, "--rate-limits=on"}, io.Discard); err != nil || o.rateLimits.resolved != api.DefaultRateLimits {
		t.Errorf("--rate-limits=on over enabled: false: %+v, %v", o.rateLimits.resolved, err)
	}
	if o, err := parseServeFlags([]string{"--dev", "--config", disabled, "--rate-limit-source-rps", "9"}, io.Discard); err != nil || o.rateLimits.resolved != (api.RateLimits{PerSource: 9}) {
		t.Errorf("--rate-limit-source-rps over enabled: false: %+v, %v; want only the source limit", o.rateLimits.resolved, err)
	}
	for name, args := range map[string][]string{
		"negative flag":        {"--dev", "--rate-limit-source-rps", "-1"},
		"not a number":         {"--dev", "--rate-limit-source-rps", "many"},
		"bad mode":             {"--dev", "--rate-limits", "maybe"},
		"negative in the file": {"--dev", "--config", write("negative.yaml", "version: v1\nrate_limits: {write: -5}\n")},
		"NaN in the file":      {"--dev", "--config", write("nan.yaml", "version: v1\nrate_limits: {read: .nan}\n")},
		"infinite in the file": {"--dev", "--config", write("inf.yaml", "version: v1\nrate_limits: {ecc: .inf}\n")},
		"unknown class":        {"--dev", "--config", write("unknown.yaml", "version: v1\nrate_limits: {crypto: 5}\n")},
	} {
		if _, err := parseServeFlags(args, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
