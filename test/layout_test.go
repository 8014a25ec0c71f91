package test

import (
	"os/exec"
	"strings"
	"testing"
)

// Imports point down (DESIGN.md, "Layout"): cmd → service/api → service →
// hsm, blob, service/store. hsm is the only importer of the PKCS#11
// libraries; blob uses the standard library only; nothing imports cmd.
func TestImportsPointDown(t *testing.T) {
	const mod = "github.com/hsmkms/hsmkms"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}|{{.Standard}}`, mod+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		imports[parts[0]] = strings.Fields(parts[1])
	}
	if len(imports) < 8 {
		t.Fatalf("go list found only %d packages", len(imports))
	}
	isStd := func(p string) bool { return !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") }
	for pkg, deps := range imports {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, mod), "/")
		for _, d := range deps {
			drel, internal := strings.CutPrefix(d, mod+"/")
			switch {
			case strings.HasPrefix(d, "github.com/miekg/pkcs11") || strings.HasPrefix(d, "github.com/ThalesIgnite/crypto11") ||
				strings.HasPrefix(d, "github.com/ThalesGroup/crypto11"):
				if rel != "hsm" {
					t.Errorf("%s imports %s; only hsm may", rel, d)
				}
			case internal && strings.HasPrefix(drel, "cmd"):
				t.Errorf("%s imports %s; nothing imports cmd", rel, d)
			case internal && drel == "test":
				t.Errorf("%s imports the test package", rel)
			}
			switch {
			case rel == "blob" && !isStd(d):
				t.Errorf("blob imports %s; it must use the standard library only", d)
			case rel == "hsm" && internal:
				t.Errorf("hsm imports %s; it must not import other hsmkms packages", d)
			case (rel == "service" || rel == "service/store") && (strings.Contains(d, "labstack/echo") || drel == "service/api"):
				t.Errorf("%s imports %s; only service/api speaks HTTP", rel, d)
			case rel == "audit" && !isStd(d):
				t.Errorf("audit imports %s; it is standard library only, so it can be audited alone", d)
			case rel == "service/policy" && !isStd(d):
				t.Errorf("service/policy imports %s; it is pure Go on the standard library", d)
			case rel == "service/store" && internal:
				t.Errorf("service/store imports %s", d)
			case rel == "service/api/sigv4" && !isStd(d):
				t.Errorf("sigv4 imports %s; it must use the standard library only", d)
			case internal && drel == "service/api" && !strings.HasPrefix(rel, "cmd") && rel != "test":
				t.Errorf("%s imports service/api; only cmd may", rel)
			}
		}
	}
}
