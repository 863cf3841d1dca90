/* vsock-echo: a tiny stream relay for the test host's vsock test (build-image.sh
 * compiles it with `gcc -static` into both the test host and the inner guest).
 *
 *   vsock-echo listen PORT             accept one vsock connection on PORT
 *   vsock-echo connect CID PORT        connect to vsock CID:PORT
 *   vsock-echo unix-listen PATH        accept one connection on the Unix socket PATH
 *   vsock-echo unix-connect PATH PORT  connect to runm-vmm's vsock socket PATH, send
 *                                      `CONNECT PORT\n`, print its reply line on stderr
 *
 * Then it copies stdin to the socket (half-closing it at end of input) and the
 * socket to stdout, until both are done. It gives up after 60 s (exit 3).
 */
#include <linux/vm_sockets.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static int unix_addr(struct sockaddr_un *a, const char *path) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path)) { fprintf(stderr, "path too long\n"); exit(2); }
    strcpy(a->sun_path, path);
    return sizeof(*a);
}

int main(int argc, char **argv) {
    int s, fd;
    alarm(60);
    if (argc == 3 && !strcmp(argv[1], "listen")) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
                                 .svm_port = (unsigned)atoi(argv[2]) };
        if ((s = socket(AF_VSOCK, SOCK_STREAM, 0)) < 0) die("socket(AF_VSOCK)");
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1)) die("bind/listen");
        if ((fd = accept(s, NULL, NULL)) < 0) die("accept");
    } else if (argc == 4 && !strcmp(argv[1], "connect")) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(argv[2]),
                                 .svm_port = (unsigned)atoi(argv[3]) };
        if ((fd = socket(AF_VSOCK, SOCK_STREAM, 0)) < 0) die("socket(AF_VSOCK)");
        if (connect(fd, (struct sockaddr *)&a, sizeof(a))) die("connect");
    } else if (argc == 3 && !strcmp(argv[1], "unix-listen")) {
        struct sockaddr_un a;
        int len = unix_addr(&a, argv[2]);
        if ((s = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) die("socket(AF_UNIX)");
        if (bind(s, (struct sockaddr *)&a, len) || listen(s, 1)) die("bind/listen");
        if ((fd = accept(s, NULL, NULL)) < 0) die("accept");
    } else if (argc == 4 && !strcmp(argv[1], "unix-connect")) {
        struct sockaddr_un a;
        int len = unix_addr(&a, argv[2]);
        char line[64], c;
        size_t n = 0;
        if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) die("socket(AF_UNIX)");
        if (connect(fd, (struct sockaddr *)&a, len)) die("connect");
        dprintf(fd, "CONNECT %s\n", argv[3]);
        while (read(fd, &c, 1) == 1 && c != '\n' && n < sizeof(line) - 1) line[n++] = c;
        line[n] = 0;
        fprintf(stderr, "%s\n", line);
        if (strncmp(line, "OK ", 3)) { fprintf(stderr, "no OK reply\n"); return 1; }
    } else {
        fprintf(stderr, "usage: see the comment at the top of vsock-echo.c\n");
        return 2;
    }
    int in_open = 1, sock_open = 1;
    char buf[4096];
    while (in_open || sock_open) {
        struct pollfd p[2] = { { in_open ? 0 : -1, POLLIN, 0 }, { sock_open ? fd : -1, POLLIN, 0 } };
        if (poll(p, 2, -1) < 0) die("poll");
        if (p[0].revents) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0) { in_open = 0; shutdown(fd, SHUT_WR); }
            else if (write(fd, buf, n) != n) die("write to socket");
        }
        if (p[1].revents) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0) sock_open = 0;
            else if (write(1, buf, n) != n) die("write to stdout");
        }
    }
    return 0;
}
