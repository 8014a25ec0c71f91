/*
 * sigkill_after_write.c: an LD_PRELOAD shim for crash tests. SoftHSM2 2.6.1
 * persists a token object by rewriting its <uuid>.object file through stdio
 * (open, ftruncate, fwrite, fclose), and the bytes reach the file in fclose.
 * The shim counts every fclose of a *.object file open for writing (other than
 * token.object) and, right after the N-th one returns, kills the process with
 * SIGKILL: the write is complete, nothing after it happened.
 *
 *   HSMKMS_KILL_AFTER_WRITE=N   the write to die after (unset or 0: never)
 *   HSMKMS_WRITE_LOG=path       append "<n> <path>" for every counted write
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int (*real_fclose)(FILE *);
static long kill_after;
static long writes;

__attribute__((constructor)) static void init(void)
{
	const char *s = getenv("HSMKMS_KILL_AFTER_WRITE");
	kill_after = s ? strtol(s, NULL, 10) : 0;
	real_fclose = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
}

/* is_object_write reports whether fd is a token object file open for writing. */
static int is_object_write(int fd, char *path, size_t size)
{
	char link[64];
	ssize_t n;
	int flags = fcntl(fd, F_GETFL);
	if (flags == -1 || (flags & O_ACCMODE) == O_RDONLY)
		return 0;
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = readlink(link, path, size - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	n = (ssize_t)strlen(path);
	return n > 7 && strcmp(path + n - 7, ".object") == 0 &&
	       (n < 13 || strcmp(path + n - 13, "/token.object") != 0);
}

int fclose(FILE *f)
{
	char path[4096];
	int counted = 0, fd, rc;
	if (real_fclose == NULL)
		real_fclose = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
	fd = f ? fileno(f) : -1;
	if (fd >= 0)
		counted = is_object_write(fd, path, sizeof path);
	rc = real_fclose(f);
	if (counted) {
		long n = __atomic_add_fetch(&writes, 1, __ATOMIC_SEQ_CST);
		const char *log = getenv("HSMKMS_WRITE_LOG");
		if (log != NULL) {
			int l = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
			if (l >= 0) {
				dprintf(l, "%ld %s\n", n, path);
				close(l);
			}
		}
		if (n == kill_after)
			kill(getpid(), SIGKILL);
	}
	return rc;
}
