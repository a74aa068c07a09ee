/* Preloaded into the relay under callgrind by scripts/bench --callgrind and scripts/instructions
 * (benchlib/callgrind.py). Each process (the forked workers too: pthread_atfork) runs a thread
 * that looks every 20 ms for DIR/on.PID.N, then zeroes the counts, turns instrumentation on and
 * creates DIR/started.PID.N (a window bounded by frame counts opens once every process counts),
 * and for DIR/off.PID.N, then turns it off and dumps (callgrind.PID.N); N = 1, 2, ...: one
 * dump per window. Forked workers cannot be
 * reached by callgrind_control (valgrind's gdbserver serves the first process only), and a
 * client request inside a signal handler trips an assertion in callgrind 3.19. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

static void *watch(void *arg) {
    (void)arg;
    const char *dir = getenv("CGTOGGLE_DIR");
    if (!dir) return 0;
    char on[4096], off[4096], started[4096];
    struct timespec nap = {0, 20 * 1000 * 1000};
    for (int n = 1;; n++) {
        snprintf(on, sizeof on, "%s/on.%d.%d", dir, (int)getpid(), n);
        snprintf(off, sizeof off, "%s/off.%d.%d", dir, (int)getpid(), n);
        snprintf(started, sizeof started, "%s/started.%d.%d", dir, (int)getpid(), n);
        while (access(on, F_OK) != 0) nanosleep(&nap, 0);
        CALLGRIND_ZERO_STATS;
        CALLGRIND_START_INSTRUMENTATION;
        FILE *ack = fopen(started, "w");
        if (ack) fclose(ack);
        while (access(off, F_OK) != 0) nanosleep(&nap, 0);
        CALLGRIND_STOP_INSTRUMENTATION;
        CALLGRIND_DUMP_STATS_AT("measured window");
    }
    return 0;
}

static void spawn(void) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &attr, watch, 0);
}

__attribute__((constructor)) static void install(void) {
    pthread_atfork(0, 0, spawn);
    spawn();
}
