// Records the number of the fatal signal that ends the process in a word of memory the caller
// maps from a file, so the next process knows how its predecessor died (a signal handler cannot
// run Swift code safely).
#ifndef KEEL_CRASH_MARKER_H
#define KEEL_CRASH_MARKER_H

#include <stdint.h>

/// From now on SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE and SIGSEGV store their number at
/// `slot`, then go on to the handler installed before (Swift's backtracer) or the default
/// action. Calling it again moves the slot.
void keel_crash_marker_install(volatile int32_t *slot);

/// Stops recording into `slot` if it is the current one (its memory is about to go away).
void keel_crash_marker_forget(volatile int32_t *slot);

#endif
