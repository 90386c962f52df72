// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * verify-loader: load each program of BPF objects on its own, with libbpf, and say how it went.
 *
 * weak-bpf-progs runs it inside a throwaway VM that boots the kernel under test (`weak-bpf-progs
 * verify`). For each object, and each program of it, the object is opened afresh, every other
 * program is set not to load, and the object is loaded: one failing program does not hide the
 * others. Nothing is attached or pinned; everything is closed again.
 *
 *   verify-loader OBJECT...
 *
 * Output, on stdout, per object (every log line starts with "| "):
 *   @object PATH
 *   @open RC                  when the object cannot be opened, then its log and "@end"
 *   @prog NAME SECTION RC     per program (RC: 0 loaded, else the positive errno), then the last
 *   | libbpf: ...             LOG_LINES lines of libbpf's messages (the verifier log among them)
 *   @end
 * The exit status is 0 when every program of every object loaded, 1 otherwise, 2 on bad usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#define CAPTURE_SIZE (256 * 1024) /* the tail of libbpf's messages kept per load */
#define LOG_LINES 60             /* the verifier's reason is in its last lines */

static char capture[CAPTURE_SIZE];
static size_t captured; /* bytes in capture; when full, the oldest half is dropped */

static void keep(const char *text, size_t len)
{
	if (len >= CAPTURE_SIZE / 2) {
		text += len - CAPTURE_SIZE / 2;
		len = CAPTURE_SIZE / 2;
	}
	if (captured + len > CAPTURE_SIZE) {
		size_t drop = captured - CAPTURE_SIZE / 2;

		memmove(capture, capture + drop, captured - drop);
		captured -= drop;
	}
	memcpy(capture + captured, text, len);
	captured += len;
}

static int on_libbpf_message(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char line[8192];
	int len;

	if (level == LIBBPF_DEBUG)
		return 0;
	len = vsnprintf(line, sizeof(line), fmt, args);
	if (len < 0)
		return 0;
	keep(line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
	return 0;
}

/* The last LOG_LINES lines captured, each as "| line", then "@end". */
static void print_log(void)
{
	size_t start = captured, end;
	int lines = 0;

	if (start > 0 && capture[start - 1] == '\n')
		start--; /* the last line's own newline */
	while (start > 0 && !(capture[start - 1] == '\n' && ++lines >= LOG_LINES))
		start--;
	while (start < captured) {
		char *nl = memchr(capture + start, '\n', captured - start);

		end = nl ? (size_t)(nl - capture) : captured;
		printf("| %.*s\n", (int)(end - start), capture + start);
		start = end + 1;
	}
	printf("@end\n");
	fflush(stdout);
	captured = 0;
}

static int errno_of(int err)
{
	return err < 0 ? -err : (err ? err : 0);
}

/* Load program number `which` of `path` alone: 0 or a positive errno. */
static int load_one(const char *path, int which, const char **name, const char **section,
		    struct bpf_object **out)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *prog;
	int i = 0;

	*out = obj;
	if (!obj)
		return errno ? errno : EINVAL;
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_autoload(prog, i == which);
		if (i == which) {
			*name = bpf_program__name(prog);
			*section = bpf_program__section_name(prog);
		}
		i++;
	}
	return errno_of(bpf_object__load(obj));
}

static int verify_object(const char *path)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	int count = 0, failed = 0;

	printf("@object %s\n", path);
	captured = 0;
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		printf("@open %d\n", errno ? errno : EINVAL);
		print_log();
		return 1;
	}
	bpf_object__for_each_program(prog, obj)
		count++;
	bpf_object__close(obj);
	for (int i = 0; i < count; i++) {
		const char *name = "?", *section = "?";
		int rc;

		captured = 0;
		rc = load_one(path, i, &name, &section, &obj);
		printf("@prog %s %s %d\n", name, section, rc);
		print_log();
		bpf_object__close(obj);
		failed |= rc != 0;
	}
	return failed;
}

int main(int argc, char **argv)
{
	int failed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJECT...\n", argv[0]);
		return 2;
	}
	libbpf_set_print(on_libbpf_message);
	for (int i = 1; i < argc; i++)
		failed |= verify_object(argv[i]);
	return failed;
}
