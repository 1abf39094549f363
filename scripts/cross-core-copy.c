/*
 * cross-core-copy: how fast this machine moves 256 KiB records from one core to another,
 * with no houndpool code at all. One thread copies a record into a ring of three slots
 * (the slots the pool's rings hold at 256 KiB), another copies it out; both spin. Prints
 * records per second for ten 100 ms phases. `s` uses a memfd mapping (as the pool's rings
 * do), `a` anonymous memory.
 *
 *   cc -O2 -pthread -o /tmp/cross-core-copy scripts/cross-core-copy.c
 *   /tmp/cross-core-copy s; /tmp/cross-core-copy a
 *
 * On the 2-vCPU VMs of docs/BENCHMARKS.md the phases of one run swing between about 7 000
 * and 80 000 records/s, for both kinds of memory: the cost of moving memory between the two
 * vCPUs changes with the host, and every shared-memory row of `hound-stress ipc` (shm,
 * shm-single, ring) inherits it at 256 KiB.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REC (256 * 1024)
#define SLOTS 3

static char *ring;
static _Atomic long tail, head;
static _Atomic int stop;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *consumer(void *unused) {
    (void)unused;
    char *dst = malloc(REC);
    long h = 0;
    while (!atomic_load(&stop)) {
        long t = atomic_load_explicit(&tail, memory_order_acquire);
        if (h == t) {
            __builtin_ia32_pause();
            continue;
        }
        memcpy(dst, ring + (h % SLOTS) * REC, REC);
        h++;
        atomic_store_explicit(&head, h, memory_order_release);
    }
    free(dst);
    return NULL;
}

int main(int argc, char **argv) {
    int use_memfd = argc > 1 && argv[1][0] == 's';
    size_t cap = (size_t)SLOTS * REC;
    if (use_memfd) {
        int fd = memfd_create("cross-core-copy", 0);
        if (fd < 0 || ftruncate(fd, (off_t)cap) != 0) {
            perror("memfd");
            return 1;
        }
        ring = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    } else {
        ring = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (ring == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(ring, 0, cap);
    char *src = malloc(REC);
    memset(src, 1, REC);
    pthread_t th;
    pthread_create(&th, NULL, consumer, NULL);
    long t = 0;
    for (int phase = 0; phase < 10; phase++) {
        double t0 = now();
        long n = 0;
        while (now() - t0 < 0.1) {
            while (t - atomic_load_explicit(&head, memory_order_acquire) >= SLOTS)
                __builtin_ia32_pause();
            memcpy(ring + (t % SLOTS) * REC, src, REC);
            t++;
            atomic_store_explicit(&tail, t, memory_order_release);
            n++;
        }
        printf("%.0f ", n / (now() - t0));
        fflush(stdout);
    }
    printf("\n");
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    return 0;
}
