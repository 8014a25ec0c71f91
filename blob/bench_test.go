package blob

import "testing"

func BenchmarkParse(b *testing.B) {
	s := sampleBlob()
	s.Ciphertext = make([]byte, 64+TagLen)
	in := s.Marshal()
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAAD(b *testing.B) {
	h := sampleBlob().Header
	ec := map[string]string{"Department": "Finance", "Project": "Alpha"}
	b.ReportAllocs()
	for b.Loop() {
		_ = h.AAD(ec)
	}
}

func BenchmarkMarshal(b *testing.B) {
	s := sampleBlob()
	s.Ciphertext = make([]byte, 64+TagLen)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Marshal()
	}
}
