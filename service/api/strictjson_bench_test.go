package api

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/hsmkms/service"
)

// benchBodies are typical request bodies as aws-sdk-go-v2 sends them.
func benchBodies() map[string]struct {
	body []byte
	into func() any
} {
	const keyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	pt := make([]byte, 1024)
	for i := range pt {
		pt[i] = byte(i * 7)
	}
	var ec strings.Builder
	ec.WriteByte('{')
	for i := range 10 {
		if i > 0 {
			ec.WriteByte(',')
		}
		ec.WriteString(`"context-key-` + strconv.Itoa(i) + `":"context value number ` + strconv.Itoa(i) + `"`)
	}
	ec.WriteByte('}')
	blob := base64.StdEncoding.EncodeToString(make([]byte, 90))
	return map[string]struct {
		body []byte
		into func() any
	}{
		"Encrypt 1KiB": {[]byte(`{"KeyId":"` + keyARN + `","Plaintext":"` + base64.StdEncoding.EncodeToString(pt) + `"}`),
			func() any { return new(service.EncryptInput) }},
		"ReEncrypt 10-pair context": {[]byte(`{"CiphertextBlob":"` + blob + `","DestinationKeyId":"` + keyARN +
			`","SourceEncryptionContext":` + ec.String() + `,"DestinationEncryptionContext":` + ec.String() + `}`),
			func() any { return new(service.ReEncryptInput) }},
	}
}

// BenchmarkDecode compares the strict decode with what it replaced
// (json.Unmarshal alone), in the same run. The "interleaved" case times
// both on alternate iterations and reports their ratio.
func BenchmarkDecode(b *testing.B) {
	for name, x := range benchBodies() {
		plain := func() {
			if err := json.Unmarshal(x.body, x.into()); err != nil {
				b.Fatal(err)
			}
		}
		strict := func() {
			if err := decode(x.body, x.into()); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name+"/json.Unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(x.body)))
			for b.Loop() {
				plain()
			}
		})
		b.Run(name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(x.body)))
			for b.Loop() {
				strict()
			}
		})
		b.Run(name+"/checkWireJSON", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(x.body)))
			s := wireShapeOf(reflect.TypeOf(x.into()))
			for b.Loop() {
				if err := checkWireJSON(x.body, s); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/interleaved", func(b *testing.B) {
			var tPlain, tStrict time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				plain()
				t1 := time.Now()
				strict()
				tStrict += time.Since(t1)
				tPlain += t1.Sub(t0)
			}
			b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "unmarshal-ns/op")
			b.ReportMetric(float64(tStrict.Nanoseconds())/float64(b.N), "decode-ns/op")
			b.ReportMetric(float64(tStrict)/float64(tPlain), "decode/unmarshal")
		})
	}
}
