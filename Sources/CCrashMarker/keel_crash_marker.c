#include "keel_crash_marker.h"

#include <signal.h>
#include <stddef.h>
#include <string.h>

static volatile int32_t *keel_slot;
static const int keel_signals[] = {SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV};
#define KEEL_SIGNAL_COUNT (sizeof keel_signals / sizeof keel_signals[0])
static struct sigaction keel_previous[KEEL_SIGNAL_COUNT];
static int keel_installed;

static void keel_record(int number, siginfo_t *info, void *context) {
    (void)context;
    if (keel_slot) *keel_slot = number;
    for (unsigned i = 0; i < KEEL_SIGNAL_COUNT; i++) {
        if (keel_signals[i] == number) sigaction(number, &keel_previous[i], NULL);
    }
    // A fault raised by an instruction happens again when the handler returns, now reaching the
    // previous handler; one sent by kill() or raise() (abort) has to be sent again.
    if (info == NULL || info->si_code <= 0) raise(number);
}

void keel_crash_marker_install(volatile int32_t *slot) {
    keel_slot = slot;
    if (keel_installed) return;
    keel_installed = 1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = keel_record;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    for (unsigned i = 0; i < KEEL_SIGNAL_COUNT; i++) sigaction(keel_signals[i], &action, &keel_previous[i]);
}

void keel_crash_marker_forget(volatile int32_t *slot) {
    if (keel_slot == slot) keel_slot = NULL;
}
