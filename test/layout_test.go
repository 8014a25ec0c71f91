package test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Imports point down (docs/ARCHITECTURE.md, "Layout"): cmd → service/api →
// service → hsm, blob, service/store. hsm is the only importer of the PKCS#11
// libraries; blob uses the standard library only; nothing imports cmd;
// metrics alone imports Prometheus, and only cmd/hsmkms imports metrics.
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
			case strings.HasPrefix(d, "github.com/prometheus/") && rel != "metrics" && rel != "test":
				t.Errorf("%s imports %s; only metrics speaks Prometheus (the layers below take observers)", rel, d)
			case internal && drel == "metrics" && rel != "cmd/hsmkms" && rel != "test":
				t.Errorf("%s imports metrics; only cmd/hsmkms wires it", rel)
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

// architectureDoc is the design of record, relative to this package.
const architectureDoc = "../docs/ARCHITECTURE.md"

// citation matches a Go comment's reference to the architecture document,
// once comment lines are joined: `docs/ARCHITECTURE.md, decision 6`,
// `…, decisions 1 and 4`, or a section by its heading, `…, "Layout"`.
var citation = regexp.MustCompile(`(docs/ARCHITECTURE|DESIGN)\.md,?\s+(?:decisions?\s+(\d+(?:\s*(?:,|and)\s*\d+)*)|"([^"]+)")`)

// TestArchitectureCitations: every decision and section of
// docs/ARCHITECTURE.md that a Go comment cites exists there, so citations
// cannot rot; and no comment cites the DESIGN.md that is not in the
// repository.
func TestArchitectureCitations(t *testing.T) {
	doc, err := os.ReadFile(architectureDoc)
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	decisions := map[string]bool{}
	anchor := regexp.MustCompile(`^<a id="decision-(\d+)"></a>$`)
	decisionHeading := regexp.MustCompile(`^Decision (\d+): `)
	anchored := ""
	for _, line := range strings.Split(string(doc), "\n") {
		if m := anchor.FindStringSubmatch(line); m != nil {
			anchored = m[1]
			continue
		}
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			headings[h] = true
			// A decision counts when its heading follows its stable anchor.
			if m := decisionHeading.FindStringSubmatch(h); m != nil && m[1] == anchored {
				decisions[m[1]] = true
			}
		}
		anchored = ""
	}
	if len(decisions) < 9 {
		t.Fatalf("%s: found %d anchored decisions; the parser or the document is wrong", architectureDoc, len(decisions))
	}

	// Comment lines are joined, so a citation may wrap.
	wrap := regexp.MustCompile(`\n[ \t]*//[ \t]*`)
	cited := 0
	var designCiters []string
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, "../"))
		text := wrap.ReplaceAllString(string(b), " ")
		for _, m := range citation.FindAllStringSubmatch(text, -1) {
			if rel == "test/layout_test.go" && !strings.HasPrefix(m[0], "docs/") {
				continue // this file's own words about the old name
			}
			if m[1] == "DESIGN" && !slices.Contains(designCiters, rel) {
				designCiters = append(designCiters, rel)
			}
			cited++
			for _, n := range regexp.MustCompile(`\d+`).FindAllString(m[2], -1) {
				if !decisions[n] {
					t.Errorf("%s cites %q: %s has no decision %s", rel, m[0], architectureDoc, n)
				}
			}
			if m[3] != "" && !headings[m[3]] {
				t.Errorf("%s cites %q: %s has no section %q", rel, m[0], architectureDoc, m[3])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited < 3 {
		t.Fatalf("found only %d citations; the scan is broken", cited)
	}
	for _, f := range designCiters {
		t.Errorf("%s cites DESIGN.md, which is not in the repository: cite docs/ARCHITECTURE.md", f)
	}
}
