package policy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleKey is the key every example file's cases ask about.
const exampleKey = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

// exampleFile is one file of testdata/: a key policy and identity policies
// taken from AWS's documentation, and requests with the decision IAM's
// rules give them.
type exampleFile struct {
	Source           []string                     `json:"source"`
	Description      string                       `json:"description"`
	KeyPolicy        json.RawMessage              `json:"key_policy"`
	IdentityPolicies map[string][]json.RawMessage `json:"identity_policies"`
	Cases            []struct {
		Name      string                  `json:"name"`
		Principal string                  `json:"principal"`
		Action    string                  `json:"action"`
		Resource  string                  `json:"resource"`
		Context   map[string]stringOrList `json:"context"`
		Want      string                  `json:"want"`
		Note      string                  `json:"note"`
	} `json:"cases"`
}

func accountOf(principal string) string {
	f := strings.SplitN(principal, ":", 6)
	if len(f) < 5 {
		return ""
	}
	return f[4]
}

// stringOrList is a context value written as one string or a list.
type stringOrList []string

func (v *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*v = []string{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*v = list
	return nil
}

// TestDocumentedExamples runs every example file of testdata/.
func TestDocumentedExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, path := range files {
		if filepath.Base(path) == "malformed.json" {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f exampleFile
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(f.Source) == 0 || len(f.Cases) == 0 {
			t.Fatalf("%s: an example file needs its sources and cases", path)
		}
		kp, err := Parse(f.KeyPolicy, KeyPolicy)
		if err != nil {
			t.Fatalf("%s: key policy: %v", path, err)
		}
		identity := map[string][]*Policy{}
		for who, docs := range f.IdentityPolicies {
			for i, d := range docs {
				p, err := Parse(d, IdentityPolicy)
				if err != nil {
					t.Fatalf("%s: identity policy %d of %s: %v", path, i, who, err)
				}
				identity[who] = append(identity[who], p)
			}
		}
		for _, c := range f.Cases {
			t.Run(strings.TrimSuffix(filepath.Base(path), ".json")+"/"+c.Name, func(t *testing.T) {
				ctx := Context{}
				for k, v := range c.Context {
					ctx.Set(k, v...)
				}
				res := c.Resource
				if res == "" {
					res = exampleKey
				}
				r := &Request{Principal: c.Principal, Account: accountOf(c.Principal), Action: c.Action, Resource: res, Context: ctx}
				if got := Evaluate(kp, identity[c.Principal], r); got.String() != c.Want {
					t.Errorf("got %s, want %s (%s)", got, c.Want, c.Note)
				}
			})
			ran++
		}
	}
	if ran == 0 {
		t.Fatal("no example cases in testdata/")
	}
}

// TestMalformedExamples: every document of testdata/malformed.json is
// refused with a message.
func TestMalformedExamples(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "malformed.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name   string `json:"name"`
		Policy string `json:"policy"`
		Why    string `json:"why"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no malformed cases")
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			_, err := Parse([]byte(c.Policy), KeyPolicy)
			var pe *Error
			if err == nil {
				t.Fatalf("accepted; AWS refuses it: %s", c.Why)
			}
			if !errors.As(err, &pe) || pe.Message == "" {
				t.Fatalf("error %v is not a *policy.Error with a message", err)
			}
		})
	}
}
