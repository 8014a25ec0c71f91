package hsm

import (
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"
)

// A PKCS#11 module is initialised once per process, however many Tokens use
// it: C_Finalize by one Token would otherwise pull the module out from under
// the others. modules counts the Tokens open on each module.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: make(map[string]*module)}

type module struct {
	ctx  *pkcs11.Ctx
	refs int
	// objects serialises calls that create or destroy token objects.
	// SoftHSM2 2.6.1 fails such calls made concurrently from several sessions
	// of one process (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT; measured:
	// 9 of 240 generate/destroy calls from 8 goroutines). They are rare
	// management calls, so serialising them costs nothing on the hot path.
	objects *sync.Mutex
}

func loadModule(path string) (*pkcs11.Ctx, *sync.Mutex, error) {
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.m[path]; ok {
		m.refs++
		return m.ctx, m.objects, nil
	}
	c := pkcs11.New(path)
	if c == nil {
		return nil, nil, &Error{Op: "load module", Kind: ErrUnavailable,
			Err: fmt.Errorf("cannot load PKCS#11 module %q", path)}
	}
	if err := c.Initialize(); err != nil && ckr(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		c.Destroy()
		return nil, nil, translate("C_Initialize", err, false)
	}
	m := &module{ctx: c, refs: 1, objects: new(sync.Mutex)}
	modules.m[path] = m
	return c, m.objects, nil
}

// reinitModule finalises and initialises the module again, after the token
// reported that the library lost its state. Other Tokens on the same module
// see their sessions fail and recover in turn.
func reinitModule(c *pkcs11.Ctx) error {
	modules.Lock()
	defer modules.Unlock()
	c.Finalize() // the module is already in a bad state; its answer changes nothing
	if err := c.Initialize(); err != nil && ckr(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		return translate("C_Initialize", err, false)
	}
	return nil
}

func releaseModule(path string) error {
	modules.Lock()
	defer modules.Unlock()
	m, ok := modules.m[path]
	if !ok {
		return nil
	}
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(modules.m, path)
	err := m.ctx.Finalize()
	m.ctx.Destroy()
	return translate("C_Finalize", err, false)
}
