package hsm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	path string
	ctx  *pkcs11.Ctx
	refs int // guarded by modules
	// objects serialises calls that create or destroy token objects.
	// SoftHSM2 2.6.1 fails such calls made concurrently from several sessions
	// of one process (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT; measured:
	// 9 of 240 generate/destroy calls from 8 goroutines). They are rare
	// management calls, so serialising them costs nothing on the hot path.
	objects *sync.Mutex

	// mu is held for reading by every operation of every Token on the
	// module, and for writing to log a Token in or out or to re-initialise
	// the module: C_Finalize must never run under another Token's call.
	mu sync.RWMutex
	// tokens are the open Tokens on the module; a re-initialisation logs
	// every one of them in again. Guarded by mu.
	tokens map[*Token]struct{}
	// initialised is false after a C_Initialize that failed. Guarded by mu.
	initialised bool
	// gate spaces out recovery attempts that keep failing.
	gate retryGate
	// reinits counts re-initialisations, for tests.
	reinits atomic.Uint64

	// stall says whether the module answers its calls; watch is the calls
	// its watchdog looks at, until stopWatch is closed (bound.go).
	stall     stallState
	watch     watchSet
	stopWatch chan struct{}
	// recovery brackets the calls made under mu held for writing.
	recovery bracket
}

func loadModule(path string) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.m[path]; ok {
		m.refs++
		return m, nil
	}
	c := pkcs11.New(path)
	if c == nil {
		return nil, &Error{Op: "load module", Kind: ErrUnavailable,
			Err: fmt.Errorf("cannot load PKCS#11 module %q", path)}
	}
	if err := c.Initialize(); err != nil && ckr(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		c.Destroy()
		return nil, translate("C_Initialize", err, false)
	}
	m := &module{path: path, ctx: c, refs: 1, objects: new(sync.Mutex), tokens: make(map[*Token]struct{}), initialised: true,
		stopWatch: make(chan struct{})}
	m.stall.init()
	m.watch.set, m.watch.st = make(map[*bracket]struct{}), &m.stall
	m.recovery.init(&m.watch)
	m.watch.add(&m.recovery)
	go m.watch.watchdog(m.stopWatch)
	modules.m[path] = m
	return m, nil
}

// reinit finalises and initialises the module again and logs every Token on
// it in again, because the module's view of a token went bad in a way only a
// new C_Initialize repairs (SoftHSM2 marks a token whose directory it could
// not read invalid for the life of the module, and enumerates tokens only in
// C_Initialize). The caller holds mu for writing, so no call of any Token is
// running. Finalisation ends every session, session object and object
// handle of every Token; each one's pool and handle cache start afresh. k
// makes the calls.
func (m *module) reinit(k p11) {
	m.reinits.Add(1)
	for t := range m.tokens {
		t.forget()
	}
	if m.initialised {
		k.Finalize() // the module is already in a bad state; its answer changes nothing
	}
	err := k.Initialize()
	m.initialised = err == nil || ckr(err) == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED
	for t := range m.tokens {
		if !m.initialised {
			// SoftHSM2 fails so while its token directory is unreadable.
			t.down = &Error{Op: "C_Initialize", Code: ckr(err), Kind: ErrUnavailable}
			t.gen.Add(1)
			continue
		}
		t.start(k) // a Token that cannot log in stays down, with the reason in t.down
	}
}

func releaseModule(m *module) error {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(modules.m, m.path)
	close(m.stopWatch)
	var err error
	if m.initialised {
		err = m.ctx.Finalize()
	}
	m.ctx.Destroy()
	return translate("C_Finalize", err, false)
}

// Recovery attempts that fail are spaced out from minRetry, doubling up to
// maxRetry, so a dead HSM is asked at most once every maxRetry however many
// requests fail meanwhile. A success resets the spacing.
const (
	minRetry = 250 * time.Millisecond
	maxRetry = 5 * time.Second
)

// retryGate says when the next recovery attempt may run.
type retryGate struct {
	next atomic.Int64  // unix nanoseconds before which no attempt runs
	wait time.Duration // the current spacing; guarded by the module's mu (write)
}

// shut reports whether an attempt at now must wait.
func (g *retryGate) shut(now time.Time) bool { return now.UnixNano() < g.next.Load() }

// failed records a failed attempt at now. The caller holds the module's mu.
func (g *retryGate) failed(now time.Time) {
	g.wait = min(max(2*g.wait, minRetry), maxRetry)
	g.next.Store(now.Add(g.wait).UnixNano())
}

// succeeded records a successful attempt. The caller holds the module's mu.
func (g *retryGate) succeeded() {
	g.wait = 0
	g.next.Store(0)
}
