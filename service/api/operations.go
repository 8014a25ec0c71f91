package api

import (
	"context"

	"github.com/hsmkms/hsmkms/service"
)

// operation is one row of the dispatch table: how to decode the request and
// which service method runs it. When params is not nil, call stores the
// request's auditable fields there before the method runs, so that a record
// written while it runs (the intent of a change) can show them. When admit
// is not nil, call asks it whether the request may run, once decoded (nil
// if it could not be), before the method runs: a refusal is its answer.
type operation struct {
	call func(ctx context.Context, svc *service.Service, caller service.Caller, body []byte, params *map[string]any, admit func(in any) error) (any, error)
}

// op adapts a typed service method to the table. Inputs that may carry
// plaintext are zeroed by zero after the call.
func op[In any, Out any](fn func(*service.Service, context.Context, service.Caller, In) (Out, error), zero func(*In)) operation {
	return operation{call: func(ctx context.Context, svc *service.Service, caller service.Caller, body []byte, params *map[string]any, admit func(any) error) (any, error) {
		var in In
		if err := decode(body, &in); err != nil {
			return nil, admitted(admit, nil, err)
		}
		if params != nil {
			*params = auditFields(&in)
		}
		if zero != nil {
			defer zero(&in)
		}
		if err := admitted(admit, &in, nil); err != nil {
			return nil, err
		}
		out, err := fn(svc, ctx, caller, in)
		if err != nil {
			return nil, err
		}
		return out, nil
	}}
}

// noOutput adapts a service method that returns only an error.
func noOutput[In any](fn func(*service.Service, context.Context, service.Caller, In) error) operation {
	return operation{call: func(ctx context.Context, svc *service.Service, caller service.Caller, body []byte, params *map[string]any, admit func(any) error) (any, error) {
		var in In
		if err := decode(body, &in); err != nil {
			return nil, admitted(admit, nil, err)
		}
		if params != nil {
			*params = auditFields(&in)
		}
		if err := admitted(admit, &in, nil); err != nil {
			return nil, err
		}
		return nil, fn(svc, ctx, caller, in)
	}}
}

// admitted asks admit (if any) about the request in; its refusal replaces
// err, the request's own failure.
func admitted(admit func(any) error, in any, err error) error {
	if admit != nil {
		if aerr := admit(in); aerr != nil {
			return aerr
		}
	}
	return err
}

func zeroEncrypt(in *service.EncryptInput) { clear(in.Plaintext) }

// Messages to sign or MAC may be as confidential as plaintext.
func zeroSign(in *service.SignInput)               { clear(in.Message) }
func zeroVerify(in *service.VerifyInput)           { clear(in.Message) }
func zeroGenerateMac(in *service.GenerateMacInput) { clear(in.Message) }
func zeroVerifyMac(in *service.VerifyMacInput)     { clear(in.Message) }

// operations is the dispatch table, keyed by X-Amz-Target. The README's list
// of supported operations is checked against it by a test.
var operations = map[string]operation{
	"TrentService.CreateKey":   op((*service.Service).CreateKey, nil),
	"TrentService.DescribeKey": op((*service.Service).DescribeKey, nil),
	"TrentService.ListKeys":    op((*service.Service).ListKeys, nil),
	"TrentService.EnableKey":   noOutput((*service.Service).EnableKey),
	"TrentService.DisableKey":  noOutput((*service.Service).DisableKey),
	"TrentService.Encrypt":     op((*service.Service).Encrypt, zeroEncrypt),
	"TrentService.Decrypt":     op((*service.Service).Decrypt, nil),
	"TrentService.ReEncrypt":   op((*service.Service).ReEncrypt, nil),
	"TrentService.GenerateDataKey": op(func(s *service.Service, ctx context.Context, c service.Caller, in service.GenerateDataKeyInput) (*service.GenerateDataKeyOutput, error) {
		return s.GenerateDataKey(ctx, c, in, true)
	}, nil),
	"TrentService.GenerateDataKeyWithoutPlaintext": op(func(s *service.Service, ctx context.Context, c service.Caller, in service.GenerateDataKeyInput) (*service.GenerateDataKeyOutput, error) {
		return s.GenerateDataKey(ctx, c, in, false)
	}, nil),
	"TrentService.GenerateRandom": op((*service.Service).GenerateRandom, nil),
	"TrentService.GenerateDataKeyPair": op(func(s *service.Service, ctx context.Context, c service.Caller, in service.GenerateDataKeyPairInput) (*service.GenerateDataKeyPairOutput, error) {
		return s.GenerateDataKeyPair(ctx, c, in, true)
	}, nil),
	"TrentService.GenerateDataKeyPairWithoutPlaintext": op(func(s *service.Service, ctx context.Context, c service.Caller, in service.GenerateDataKeyPairInput) (*service.GenerateDataKeyPairOutput, error) {
		return s.GenerateDataKeyPair(ctx, c, in, false)
	}, nil),
	"TrentService.GetPublicKey": op((*service.Service).GetPublicKey, nil),
	"TrentService.Sign":         op((*service.Service).Sign, zeroSign),
	"TrentService.Verify":       op((*service.Service).Verify, zeroVerify),
	"TrentService.GenerateMac":  op((*service.Service).GenerateMac, zeroGenerateMac),
	"TrentService.VerifyMac":    op((*service.Service).VerifyMac, zeroVerifyMac),

	"TrentService.CreateAlias":          noOutput((*service.Service).CreateAlias),
	"TrentService.UpdateAlias":          noOutput((*service.Service).UpdateAlias),
	"TrentService.DeleteAlias":          noOutput((*service.Service).DeleteAlias),
	"TrentService.ListAliases":          op((*service.Service).ListAliases, nil),
	"TrentService.TagResource":          noOutput((*service.Service).TagResource),
	"TrentService.UntagResource":        noOutput((*service.Service).UntagResource),
	"TrentService.ListResourceTags":     op((*service.Service).ListResourceTags, nil),
	"TrentService.UpdateKeyDescription": noOutput((*service.Service).UpdateKeyDescription),
	"TrentService.ScheduleKeyDeletion":  op((*service.Service).ScheduleKeyDeletion, nil),
	"TrentService.CancelKeyDeletion":    op((*service.Service).CancelKeyDeletion, nil),
	"TrentService.EnableKeyRotation":    noOutput((*service.Service).EnableKeyRotation),
	"TrentService.DisableKeyRotation":   noOutput((*service.Service).DisableKeyRotation),
	"TrentService.GetKeyRotationStatus": op((*service.Service).GetKeyRotationStatus, nil),
	"TrentService.RotateKeyOnDemand":    op((*service.Service).RotateKeyOnDemand, nil),
	"TrentService.ListKeyRotations":     op((*service.Service).ListKeyRotations, nil),
	"TrentService.GetKeyPolicy":         op((*service.Service).GetKeyPolicy, nil),
	"TrentService.PutKeyPolicy":         noOutput((*service.Service).PutKeyPolicy),
	"TrentService.ListKeyPolicies":      op((*service.Service).ListKeyPolicies, nil),
	"TrentService.CreateGrant":          op((*service.Service).CreateGrant, nil),
	"TrentService.ListGrants":           op((*service.Service).ListGrants, nil),
	"TrentService.ListRetirableGrants":  op((*service.Service).ListRetirableGrants, nil),
	"TrentService.RetireGrant":          noOutput((*service.Service).RetireGrant),
	"TrentService.RevokeGrant":          noOutput((*service.Service).RevokeGrant),
}

// Operations returns the names of the supported operations.
func Operations() []string {
	names := make([]string, 0, len(operations))
	for target := range operations {
		names = append(names, target[len("TrentService."):])
	}
	return names
}
