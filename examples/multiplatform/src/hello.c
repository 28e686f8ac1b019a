/* hello: says which architecture it was compiled for, and which machine runs it.
 * Under QEMU user-mode emulation the kernel reports the emulated machine (aarch64). */
#include <stdio.h>
#include <sys/utsname.h>

#include "built-on.h" /* BUILT_ON: the machine that compiled this, made by the Dockerfile */

#if defined(__aarch64__)
#define COMPILED_FOR "arm64"
#elif defined(__x86_64__)
#define COMPILED_FOR "amd64"
#elif defined(__arm__)
#define COMPILED_FOR "arm"
#else
#define COMPILED_FOR "another architecture"
#endif

int main(void) {
    struct utsname u;
    if (uname(&u) != 0) {
        perror("uname");
        return 1;
    }
    printf("hello from %s: compiled for %s on %s\n", u.machine, COMPILED_FOR, BUILT_ON);
    return 0;
}
