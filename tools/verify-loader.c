// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * verify-loader: load each program of BPF objects on its own, with libbpf, and say how it went.
 *
 * weak-bpf-progs runs it inside a throwaway VM that boots the kernel under test (`weak-bpf-progs
 * verify`). For each object, and each program of it, the object is opened afresh, every other
 * program is set not to load, and the object is loaded: one failing program does not hide the
 * others. A program that loaded is then attached as libbpf would auto-attach it (kprobes,
 * tracepoints, fentry, ...) and detached at once; nothing is pinned; everything is closed again.
 *
 *   verify-loader OBJECT...
 *   verify-loader --version
 *
 * Output, on stdout (names and sections escaped: bytes <= ' ', >= 0x7f and '\' as \xHH):
 *   @loader PROTOCOL libbpf MAJOR.MINOR
 *   @object PATH
 *   @open RC                  when the object cannot be opened, then its log and "@end"
 *   @count N                  the object's programs
 *   @prog RC ATTACH NAME SECTION
 *                             per program: RC 0 loaded, else the positive errno; ATTACH "-" when
 *                             not tried (not loaded), 0 attached, else the errno (EOPNOTSUPP:
 *                             libbpf cannot auto-attach this kind); then the last LOG_LINES
 *   | libbpf: ...             lines of libbpf's messages (the verifier log among them), "@end"
 *   @done N                   the programs reported for this object
 * The exit status is 0 when every program of every object loaded, 1 otherwise, 2 on bad usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#define PROTOCOL 2               /* weak_bpf/verify/guest.py reads this output */
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

/* `text` on one line with no spaces: the bytes that could split a record, as \xHH. */
static void print_escaped(const char *text)
{
	for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
		if (*c <= ' ' || *c >= 0x7f || *c == '\\')
			printf("\\x%02x", *c);
		else
			putchar(*c);
	}
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
	return err < 0 ? -err : err;
}

/* Load program number `which` of `path` alone, then attach it: 0 or a positive errno. */
static int load_one(const char *path, int which, const char **name, const char **section,
		    int *attach, struct bpf_object **out)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *prog, *chosen = NULL;
	struct bpf_link *link;
	int i = 0, rc;

	*out = obj;
	*attach = -1;
	if (!obj)
		return errno ? errno : EINVAL;
	bpf_object__for_each_program(prog, obj) {
		bpf_program__set_autoload(prog, i == which);
		if (i == which) {
			chosen = prog;
			*name = bpf_program__name(prog);
			*section = bpf_program__section_name(prog);
		}
		i++;
	}
	if (!chosen)
		return ENOENT;
	rc = errno_of(bpf_object__load(obj));
	if (rc)
		return rc;
	errno = 0;
	link = bpf_program__attach(chosen);
	if (link) {
		*attach = 0;
		bpf_link__destroy(link);
	} else {
		*attach = errno ? errno : EINVAL;
	}
	return 0;
}

static int verify_object(const char *path)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	int count = 0, failed = 0;

	printf("@object ");
	print_escaped(path);
	printf("\n");
	captured = 0;
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		printf("@open %d\n", errno ? errno : EINVAL);
		print_log();
		printf("@done 0\n");
		return 1;
	}
	bpf_object__for_each_program(prog, obj)
		count++;
	bpf_object__close(obj);
	printf("@count %d\n", count);
	for (int i = 0; i < count; i++) {
		const char *name = "?", *section = "?";
		int rc, attach;

		captured = 0;
		rc = load_one(path, i, &name, &section, &attach, &obj);
		printf("@prog %d ", rc);
		if (attach < 0)
			printf("- ");
		else
			printf("%d ", attach);
		print_escaped(name);
		putchar(' ');
		print_escaped(section);
		putchar('\n');
		print_log();
		bpf_object__close(obj);
		failed |= rc != 0;
	}
	printf("@done %d\n", count);
	fflush(stdout);
	return failed;
}

static void print_version(void)
{
	printf("@loader %d libbpf %u.%u\n", PROTOCOL, libbpf_major_version(), libbpf_minor_version());
}

int main(int argc, char **argv)
{
	int failed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJECT...\n       %s --version\n", argv[0], argv[0]);
		return 2;
	}
	print_version();
	if (argc == 2 && strcmp(argv[1], "--version") == 0)
		return 0;
	libbpf_set_print(on_libbpf_message);
	for (int i = 1; i < argc; i++)
		failed |= verify_object(argv[i]);
	return failed;
}
