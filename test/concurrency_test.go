package test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// TestConcurrentRoundTrips runs 16 goroutines of 50 Encrypt/Decrypt round
// trips each, over two keys, each with its own encryption context.
func TestConcurrentRoundTrips(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.client()
	keys := []string{aws.ToString(createKey(t, c).KeyId), aws.ToString(createKey(t, c).Arn)}
	const workers, rounds = 16, 50

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := ctxT(t)
			key := keys[w%len(keys)]
			for i := 0; i < rounds; i++ {
				ec := map[string]string{"worker": fmt.Sprint(w), "round": fmt.Sprint(i)}
				pt := []byte(fmt.Sprintf("worker %d round %d %s", w, i, bytes.Repeat([]byte{byte(w)}, i)))
				enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: pt, EncryptionContext: ec})
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: Encrypt: %w", w, i, err)
					return
				}
				dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: Decrypt: %w", w, i, err)
					return
				}
				if !bytes.Equal(dec.Plaintext, pt) {
					errs <- fmt.Errorf("worker %d round %d: got %q, want %q", w, i, dec.Plaintext, pt)
					return
				}
				if aws.ToString(dec.KeyId) != aws.ToString(enc.KeyId) {
					errs <- fmt.Errorf("worker %d round %d: Decrypt KeyId %s, Encrypt KeyId %s", w, i,
						aws.ToString(dec.KeyId), aws.ToString(enc.KeyId))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
