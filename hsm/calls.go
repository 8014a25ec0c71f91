package hsm

import (
	"github.com/miekg/pkcs11"
)

// The PKCS#11 calls hsmkms makes, each in its p11's bracket (bound.go) so
// the watchdog sees one that does not return. Errors are the module's, for
// the caller to translate; a call refused because its caller stopped
// waiting returns an ErrTimeout *Error, which translate keeps as it is.

func (k p11) OpenSession(slot uint, flags uint) (pkcs11.SessionHandle, error) {
	if err := k.enter("C_OpenSession", k.t.cfg.CallTimeout); err != nil {
		return 0, err
	}
	defer k.exit()
	return k.t.ctx.OpenSession(slot, flags)
}

func (k p11) CloseSession(sh pkcs11.SessionHandle) error {
	if err := k.enter("C_CloseSession", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.CloseSession(sh)
}

func (k p11) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	if err := k.enter("C_GetSessionInfo", k.t.cfg.CallTimeout); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	defer k.exit()
	return k.t.ctx.GetSessionInfo(sh)
}

func (k p11) GetSlotList(present bool) ([]uint, error) {
	if err := k.enter("C_GetSlotList", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	defer k.exit()
	return k.t.ctx.GetSlotList(present)
}

func (k p11) GetTokenInfo(slot uint) (pkcs11.TokenInfo, error) {
	if err := k.enter("C_GetTokenInfo", k.t.cfg.CallTimeout); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	defer k.exit()
	return k.t.ctx.GetTokenInfo(slot)
}

func (k p11) Login(sh pkcs11.SessionHandle, user uint, pin string) error {
	if err := k.enter("C_Login", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.Login(sh, user, pin)
}

// Initialize and Finalize get the long bound: SoftHSM2 reads every token's
// files in C_Initialize.
func (k p11) Initialize() error {
	if err := k.enter("C_Initialize", k.t.cfg.LongCallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.Initialize()
}

func (k p11) Finalize() error {
	if err := k.enter("C_Finalize", k.t.cfg.LongCallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.Finalize()
}

// GenerateRandom's bytes may become a data key: if they come back after the
// caller stopped waiting, they are cleared and not returned.
func (k p11) GenerateRandom(sh pkcs11.SessionHandle, n int) ([]byte, error) {
	if err := k.enter("C_GenerateRandom", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	r, err := k.t.ctx.GenerateRandom(sh, n)
	k.exit()
	if k.late() {
		clear(r)
		return nil, abandonedErr("C_GenerateRandom")
	}
	return r, err
}

func (k p11) EncryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := k.enter("C_EncryptInit", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.EncryptInit(sh, m, o)
}

func (k p11) Encrypt(sh pkcs11.SessionHandle, in []byte) ([]byte, error) {
	if err := k.enter("C_Encrypt", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	defer k.exit()
	return k.t.ctx.Encrypt(sh, in)
}

func (k p11) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := k.enter("C_DecryptInit", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.DecryptInit(sh, m, o)
}

// Decrypt's plaintext, if it comes back after the caller stopped waiting, is
// cleared and not returned.
func (k p11) Decrypt(sh pkcs11.SessionHandle, in []byte) ([]byte, error) {
	if err := k.enter("C_Decrypt", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	out, err := k.t.ctx.Decrypt(sh, in)
	k.exit()
	if k.late() {
		clear(out)
		return nil, abandonedErr("C_Decrypt")
	}
	return out, err
}

func (k p11) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := k.enter("C_SignInit", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.SignInit(sh, m, o)
}

func (k p11) Sign(sh pkcs11.SessionHandle, msg []byte) ([]byte, error) {
	if err := k.enter("C_Sign", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	defer k.exit()
	return k.t.ctx.Sign(sh, msg)
}

func (k p11) VerifyInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, o pkcs11.ObjectHandle) error {
	if err := k.enter("C_VerifyInit", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.VerifyInit(sh, m, o)
}

func (k p11) Verify(sh pkcs11.SessionHandle, data, sig []byte) error {
	if err := k.enter("C_Verify", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.Verify(sh, data, sig)
}

func (k p11) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if err := k.enter("C_GetAttributeValue", k.t.cfg.CallTimeout); err != nil {
		return nil, err
	}
	defer k.exit()
	return k.t.ctx.GetAttributeValue(sh, o, a)
}

// GenerateKey and GenerateKeyPair get the long bound.
func (k p11) GenerateKey(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := k.enter("C_GenerateKey", k.t.cfg.LongCallTimeout); err != nil {
		return 0, err
	}
	defer k.exit()
	return k.t.ctx.GenerateKey(sh, m, tmpl)
}

func (k p11) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, pub, priv []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if err := k.enter("C_GenerateKeyPair", k.t.cfg.LongCallTimeout); err != nil {
		return 0, 0, err
	}
	defer k.exit()
	return k.t.ctx.GenerateKeyPair(sh, m, pub, priv)
}

func (k p11) CopyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if err := k.enter("C_CopyObject", k.t.cfg.CallTimeout); err != nil {
		return 0, err
	}
	defer k.exit()
	return k.t.ctx.CopyObject(sh, o, tmpl)
}

func (k p11) DestroyObject(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle) error {
	if err := k.enter("C_DestroyObject", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.DestroyObject(sh, o)
}

func (k p11) FindObjectsInit(sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) error {
	if err := k.enter("C_FindObjectsInit", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.FindObjectsInit(sh, tmpl)
}

func (k p11) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	if err := k.enter("C_FindObjects", k.t.cfg.CallTimeout); err != nil {
		return nil, false, err
	}
	defer k.exit()
	return k.t.ctx.FindObjects(sh, max)
}

func (k p11) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	if err := k.enter("C_FindObjectsFinal", k.t.cfg.CallTimeout); err != nil {
		return err
	}
	defer k.exit()
	return k.t.ctx.FindObjectsFinal(sh)
}
