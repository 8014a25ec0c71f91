package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

const committedDir = "../../testdata/vectors"

// TestCommittedVectors checks that the committed vector files are exactly
// what the generator produces now: same set of files, same bytes.
func TestCommittedVectors(t *testing.T) {
	want := files()
	got, err := filepath.Glob(filepath.Join(committedDir, "*"+fileExt))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Fatalf("no committed vectors in %s", committedDir)
	}
	seen := make(map[string]bool)
	for _, path := range got {
		name := filepath.Base(path)
		seen[name] = true
		w, ok := want[name]
		if !ok {
			t.Errorf("%s is committed but not generated (run go generate ./blob)", name)
			continue
		}
		g, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s differs from generator output (run go generate ./blob)", name)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s is generated but not committed (run go generate ./blob)", name)
		}
	}
}

// TestDeterministic checks that two runs of the generator agree.
func TestDeterministic(t *testing.T) {
	a, b := files(), files()
	if len(a) != len(b) {
		t.Fatalf("runs produced %d and %d files", len(a), len(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Errorf("%s differs between runs", name)
		}
	}
}
