/*
 * pkcs11_fault_shim.c: a PKCS#11 module for token-fault tests. It loads the
 * real module (HSMKMS_FAULT_MODULE, default SoftHSM2's), forwards every call
 * to it, and, on command, makes chosen functions fail with a CKR code or
 * block until released, as a network HSM that errs or stops answering would.
 *
 *   HSMKMS_FAULT_MODULE=path    the module to forward to
 *   HSMKMS_FAULT_CONTROL=path   the control file (unset: forward only)
 *
 * The control file is lines of key=value, replaced whole (written beside it
 * and renamed over it) by the test; every call stats it and re-reads it when
 * it changed:
 *
 *   seq=N          changes with every command; a new one restarts count
 *   action=none|fail|hang
 *   rv=N           the CKR code a failing call returns
 *   functions=a,b  names (C_Encrypt), prefixes (C_Encrypt*) or all
 *   count=N        how many matching calls the fault takes (0: all of them)
 *   release=N      calls blocked by a hang forward when it changes
 *
 * A hang that is cleared keeps the calls it blocked until release changes:
 * requests lost in a network HSM that came back.
 *
 * C_CloseSession, C_CloseAllSessions and C_Finalize always reach the real
 * module (after a hang; a fault replaces their result), so the sessions the
 * module holds are the ones its caller believes it holds. The shim counts
 * them and writes its state to HSMKMS_FAULT_CONTROL.status (key=value lines,
 * renamed into place) whenever it changes:
 *
 *   sessions=N   sessions open in the real module
 *   hanging=N    calls blocked now
 *   injected=N   faults injected since load
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_PTR *
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"

#define EXPORT __attribute__((visibility("default")))

enum { ACT_NONE, ACT_FAIL, ACT_HANG };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST shim;
static char control[4096], status_path[4200], status_tmp[4300];

/* The command in force, and what the shim saw of the control file. */
static struct {
	long seq, count, release;
	int action;
	CK_RV rv;
	char functions[1024];
} cmd;
static long used; /* matching calls the current command took */
static struct stat seen;
static int have_seen;

/* Sessions open in the real module, with their slots. */
static struct session {
	CK_SESSION_HANDLE h;
	CK_SLOT_ID slot;
} *sessions;
static size_t nsessions, capsessions;
static long hanging, injected;

static void write_status_locked(void)
{
	FILE *f;
	if (!control[0])
		return;
	f = fopen(status_tmp, "w");
	if (!f)
		return;
	fprintf(f, "sessions=%zu\nhanging=%ld\ninjected=%ld\n", nsessions, hanging, injected);
	if (fclose(f) == 0)
		rename(status_tmp, status_path);
}

static void parse_locked(FILE *f)
{
	char line[1200];
	long seq = cmd.seq;
	memset(&cmd, 0, sizeof cmd);
	while (fgets(line, sizeof line, f)) {
		char *v = strchr(line, '=');
		size_t n;
		if (!v)
			continue;
		*v++ = '\0';
		n = strlen(v);
		while (n > 0 && (v[n - 1] == '\n' || v[n - 1] == '\r'))
			v[--n] = '\0';
		if (strcmp(line, "seq") == 0)
			cmd.seq = strtol(v, NULL, 10);
		else if (strcmp(line, "count") == 0)
			cmd.count = strtol(v, NULL, 10);
		else if (strcmp(line, "release") == 0)
			cmd.release = strtol(v, NULL, 10);
		else if (strcmp(line, "rv") == 0)
			cmd.rv = strtoul(v, NULL, 0);
		else if (strcmp(line, "functions") == 0)
			snprintf(cmd.functions, sizeof cmd.functions, "%s", v);
		else if (strcmp(line, "action") == 0)
			cmd.action = strcmp(v, "fail") == 0 ? ACT_FAIL : strcmp(v, "hang") == 0 ? ACT_HANG : ACT_NONE;
	}
	if (cmd.seq != seq)
		used = 0;
}

/* reload_locked re-reads the control file if it changed since last seen. */
static void reload_locked(void)
{
	struct stat st;
	FILE *f;
	if (!control[0] || stat(control, &st) != 0)
		return;
	if (have_seen && st.st_ino == seen.st_ino && st.st_dev == seen.st_dev && st.st_size == seen.st_size &&
	    st.st_mtim.tv_sec == seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == seen.st_mtim.tv_nsec)
		return;
	f = fopen(control, "r");
	if (!f)
		return;
	parse_locked(f);
	fclose(f);
	seen = st;
	have_seen = 1;
}

static int matches(const char *fn)
{
	char list[1024], *save = NULL, *p;
	snprintf(list, sizeof list, "%s", cmd.functions);
	for (p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(p);
		if (strcmp(p, "all") == 0 || strcmp(p, fn) == 0)
			return 1;
		if (n > 0 && p[n - 1] == '*' && strncmp(p, fn, n - 1) == 0)
			return 1;
	}
	return 0;
}

/*
 * fault decides what happens to a call of fn: 0, forward it; 1, return *rv
 * without forwarding. A hang blocks here, then forwards.
 */
static int fault(const char *fn, CK_RV *rv)
{
	long release;
	int act;
	pthread_mutex_lock(&mu);
	reload_locked();
	act = cmd.action;
	if (act == ACT_NONE || !matches(fn) || (cmd.count > 0 && used >= cmd.count)) {
		pthread_mutex_unlock(&mu);
		return 0;
	}
	used++;
	injected++;
	if (act == ACT_FAIL) {
		*rv = cmd.rv;
		write_status_locked();
		pthread_mutex_unlock(&mu);
		return 1;
	}
	release = cmd.release;
	hanging++;
	write_status_locked();
	while (cmd.release == release) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		pthread_mutex_unlock(&mu);
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&mu);
		reload_locked();
	}
	hanging--;
	write_status_locked();
	pthread_mutex_unlock(&mu);
	return 0;
}

static void track_open_locked(CK_SESSION_HANDLE h, CK_SLOT_ID slot)
{
	if (nsessions == capsessions) {
		size_t c = capsessions ? 2 * capsessions : 64;
		struct session *s = realloc(sessions, c * sizeof *s);
		if (!s)
			return;
		sessions = s;
		capsessions = c;
	}
	sessions[nsessions].h = h;
	sessions[nsessions].slot = slot;
	nsessions++;
	write_status_locked();
}

static void track_close_locked(CK_SESSION_HANDLE h)
{
	size_t i;
	for (i = 0; i < nsessions; i++) {
		if (sessions[i].h == h) {
			sessions[i] = sessions[--nsessions];
			break;
		}
	}
	write_status_locked();
}

static void track_close_slot_locked(CK_SLOT_ID slot)
{
	size_t i = 0;
	while (i < nsessions) {
		if (sessions[i].slot == slot)
			sessions[i] = sessions[--nsessions];
		else
			i++;
	}
	write_status_locked();
}

/* Functions with nothing to track: fault, else forward. */
#define FORWARD(name, params, args)              \
	static CK_RV w_##name params                 \
	{                                            \
		CK_RV rv;                                \
		if (fault(#name, &rv))                   \
			return rv;                           \
		return real->name args;                  \
	}

FORWARD(C_Initialize, (CK_VOID_PTR a), (a))
FORWARD(C_GetInfo, (CK_INFO_PTR a), (a))
FORWARD(C_GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))
FORWARD(C_GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b))
FORWARD(C_GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c))
FORWARD(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d), (a, b, c, d))
FORWARD(C_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e), (a, b, c, d, e))
FORWARD(C_GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))
FORWARD(C_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e), (a, b, c, d, e))
FORWARD(C_Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_Logout, (CK_SESSION_HANDLE a), (a))
FORWARD(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (a, b, c, d))
FORWARD(C_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
FORWARD(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
FORWARD(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_FindObjects, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, CK_ULONG_PTR d), (a, b, c, d))
FORWARD(C_FindObjectsFinal, (CK_SESSION_HANDLE a), (a))
FORWARD(C_EncryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Encrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_EncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_EncryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_DecryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Decrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b), (a, b))
FORWARD(C_Digest, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
FORWARD(C_DigestFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Sign, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_SignUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_SignFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_SignRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_VerifyInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG e), (a, b, c, d, e))
FORWARD(C_VerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_VerifyFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_VerifyRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_VerifyRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DigestEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptDigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_SignEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
FORWARD(C_GenerateKeyPair,
        (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f,
         CK_OBJECT_HANDLE_PTR g, CK_OBJECT_HANDLE_PTR h),
        (a, b, c, d, e, f, g, h))
FORWARD(C_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f),
        (a, b, c, d, e, f))
FORWARD(C_UnwrapKey,
        (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, CK_ATTRIBUTE_PTR f, CK_ULONG g,
         CK_OBJECT_HANDLE_PTR h),
        (a, b, c, d, e, f, g, h))
FORWARD(C_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f),
        (a, b, c, d, e, f))
FORWARD(C_SeedRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_GetFunctionStatus, (CK_SESSION_HANDLE a), (a))
FORWARD(C_CancelFunction, (CK_SESSION_HANDLE a), (a))
FORWARD(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c), (a, b, c))

static CK_RV w_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR ph)
{
	CK_RV rv;
	if (fault("C_OpenSession", &rv))
		return rv;
	rv = real->C_OpenSession(slot, flags, app, notify, ph);
	if (rv == CKR_OK) {
		pthread_mutex_lock(&mu);
		track_open_locked(*ph, slot);
		pthread_mutex_unlock(&mu);
	}
	return rv;
}

/* Closing always reaches the real module; an injected code replaces the result. */
static CK_RV w_C_CloseSession(CK_SESSION_HANDLE h)
{
	CK_RV injected_rv, rv;
	int inject = fault("C_CloseSession", &injected_rv);
	rv = real->C_CloseSession(h);
	if (rv == CKR_OK) {
		pthread_mutex_lock(&mu);
		track_close_locked(h);
		pthread_mutex_unlock(&mu);
	}
	return inject ? injected_rv : rv;
}

static CK_RV w_C_CloseAllSessions(CK_SLOT_ID slot)
{
	CK_RV injected_rv, rv;
	int inject = fault("C_CloseAllSessions", &injected_rv);
	rv = real->C_CloseAllSessions(slot);
	if (rv == CKR_OK) {
		pthread_mutex_lock(&mu);
		track_close_slot_locked(slot);
		pthread_mutex_unlock(&mu);
	}
	return inject ? injected_rv : rv;
}

static CK_RV w_C_Finalize(CK_VOID_PTR reserved)
{
	CK_RV injected_rv, rv;
	int inject = fault("C_Finalize", &injected_rv);
	rv = real->C_Finalize(reserved);
	if (rv == CKR_OK) {
		pthread_mutex_lock(&mu);
		nsessions = 0;
		write_status_locked();
		pthread_mutex_unlock(&mu);
	}
	return inject ? injected_rv : rv;
}

static CK_RV w_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp);

/* load_locked opens the real module and builds the shim's function list. */
static CK_RV load_locked(void)
{
	const char *path, *c;
	void *lib;
	CK_C_GetFunctionList get;
	if (real)
		return CKR_OK;
	path = getenv("HSMKMS_FAULT_MODULE");
	if (!path || !*path)
		path = "/usr/lib/softhsm/libsofthsm2.so";
	lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "pkcs11_fault_shim: %s\n", dlerror());
		return CKR_GENERAL_ERROR;
	}
	get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (!get || get(&real) != CKR_OK || !real) {
		fprintf(stderr, "pkcs11_fault_shim: %s has no function list\n", path);
		real = NULL;
		return CKR_GENERAL_ERROR;
	}
	c = getenv("HSMKMS_FAULT_CONTROL");
	if (c && *c) {
		snprintf(control, sizeof control, "%s", c);
		snprintf(status_path, sizeof status_path, "%s.status", c);
		snprintf(status_tmp, sizeof status_tmp, "%s.status.tmp", c);
	}
	shim.version = real->version;
#define SET(name) shim.name = w_##name
	SET(C_Initialize); SET(C_Finalize); SET(C_GetInfo); SET(C_GetFunctionList); SET(C_GetSlotList);
	SET(C_GetSlotInfo); SET(C_GetTokenInfo); SET(C_GetMechanismList); SET(C_GetMechanismInfo);
	SET(C_InitToken); SET(C_InitPIN); SET(C_SetPIN); SET(C_OpenSession); SET(C_CloseSession);
	SET(C_CloseAllSessions); SET(C_GetSessionInfo); SET(C_GetOperationState); SET(C_SetOperationState);
	SET(C_Login); SET(C_Logout); SET(C_CreateObject); SET(C_CopyObject); SET(C_DestroyObject);
	SET(C_GetObjectSize); SET(C_GetAttributeValue); SET(C_SetAttributeValue); SET(C_FindObjectsInit);
	SET(C_FindObjects); SET(C_FindObjectsFinal); SET(C_EncryptInit); SET(C_Encrypt); SET(C_EncryptUpdate);
	SET(C_EncryptFinal); SET(C_DecryptInit); SET(C_Decrypt); SET(C_DecryptUpdate); SET(C_DecryptFinal);
	SET(C_DigestInit); SET(C_Digest); SET(C_DigestUpdate); SET(C_DigestKey); SET(C_DigestFinal);
	SET(C_SignInit); SET(C_Sign); SET(C_SignUpdate); SET(C_SignFinal); SET(C_SignRecoverInit);
	SET(C_SignRecover); SET(C_VerifyInit); SET(C_Verify); SET(C_VerifyUpdate); SET(C_VerifyFinal);
	SET(C_VerifyRecoverInit); SET(C_VerifyRecover); SET(C_DigestEncryptUpdate); SET(C_DecryptDigestUpdate);
	SET(C_SignEncryptUpdate); SET(C_DecryptVerifyUpdate); SET(C_GenerateKey); SET(C_GenerateKeyPair);
	SET(C_WrapKey); SET(C_UnwrapKey); SET(C_DeriveKey); SET(C_SeedRandom); SET(C_GenerateRandom);
	SET(C_GetFunctionStatus); SET(C_CancelFunction); SET(C_WaitForSlotEvent);
#undef SET
	write_status_locked();
	return CKR_OK;
}

static CK_RV w_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp)
{
	CK_RV rv;
	if (!pp)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&mu);
	rv = load_locked();
	pthread_mutex_unlock(&mu);
	if (rv == CKR_OK)
		*pp = &shim;
	return rv;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR pp) { return w_C_GetFunctionList(pp); }
