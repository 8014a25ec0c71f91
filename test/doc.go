// Package test holds the end-to-end tests of hsmkms: they drive the KMS
// endpoint with the AWS SDK for Go v2 and with hand-built, hand-signed HTTP
// requests, against in-process servers on a SoftHSM2 token of this process
// and against the hsmkms binary itself.
//
// It holds no code outside its _test.go files. Run it with
//
//	go test -race ./test/
//
// SoftHSM2 must be installed (apt-get install -y softhsm2); the tests fail,
// they do not skip, when it is missing.
package test
