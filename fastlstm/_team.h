/* A persistent team of worker threads for the Cython front end.
 *
 * team_run(team, fn, arg) runs fn(arg, tid, n) on every thread of the team, the
 * caller being tid 0, and returns when all have finished.  Between jobs workers
 * spin for a short while (a streaming caller comes back within microseconds),
 * then sleep on a condition variable.  Inside a job, team_barrier() is a
 * sense-reversing spin barrier: the per-step synchronisation of a recurrent
 * layer split across threads costs a few hundred nanoseconds, not a wake-up.
 *
 * Workers run with denormals flushed to zero (FTZ/DAZ); team_run sets the same
 * on the caller for the duration of the job and restores its MXCSR after.
 */
#ifndef FASTLSTM_TEAM_H
#define FASTLSTM_TEAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FL_PAUSE() _mm_pause()
#define FL_GET_CSR() _mm_getcsr()
#define FL_SET_CSR(v) _mm_setcsr(v)
#define FL_FTZ_DAZ 0x8040u
#else
#define FL_PAUSE() ((void)0)
#define FL_GET_CSR() 0u
#define FL_SET_CSR(v) ((void)(v))
#define FL_FTZ_DAZ 0u
#endif

#define FL_SPIN_ROUNDS 20000

typedef void (*fl_task)(void *arg, int tid, int nthreads);

typedef struct fl_team {
    int n;
    pid_t pid;          /* the process that started the workers */
    pthread_t *threads;
    fl_task task;
    void *arg;
    atomic_long generation;
    atomic_int done;
    atomic_int stop;
    atomic_int sleepers;
    atomic_int busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* barrier */
    atomic_int bar_count;
    atomic_int bar_sense;
} fl_team;

typedef struct {
    fl_team *team;
    int tid;
} fl_worker_arg;

static void fl_barrier(fl_team *t, int *local_sense) {
    int s = !*local_sense;
    *local_sense = s;
    if (atomic_fetch_add(&t->bar_count, 1) == t->n - 1) {
        atomic_store(&t->bar_count, 0);
        atomic_store(&t->bar_sense, s);
    } else {
        while (atomic_load_explicit(&t->bar_sense, memory_order_acquire) != s)
            FL_PAUSE();
    }
}

static void *fl_worker(void *p) {
    fl_worker_arg a = *(fl_worker_arg *)p;
    free(p);
    fl_team *t = a.team;
    FL_SET_CSR(FL_GET_CSR() | FL_FTZ_DAZ);
    long seen = 0;
    for (;;) {
        int spins = 0;
        long g;
        while ((g = atomic_load_explicit(&t->generation, memory_order_acquire)) == seen &&
               !atomic_load(&t->stop)) {
            if (++spins < FL_SPIN_ROUNDS) {
                FL_PAUSE();
                continue;
            }
            pthread_mutex_lock(&t->mu);
            atomic_fetch_add(&t->sleepers, 1);
            while (atomic_load(&t->generation) == seen && !atomic_load(&t->stop))
                pthread_cond_wait(&t->cv, &t->mu);
            atomic_fetch_sub(&t->sleepers, 1);
            pthread_mutex_unlock(&t->mu);
            spins = 0;
        }
        if (atomic_load(&t->stop))
            return NULL;
        seen = g;
        t->task(t->arg, a.tid, t->n);
        atomic_fetch_add_explicit(&t->done, 1, memory_order_release);
    }
}

/* A team of n threads (the caller counts as one); NULL on failure or n < 2. */
static fl_team *fl_team_create(int n) {
    if (n < 2)
        return NULL;
    fl_team *t = (fl_team *)calloc(1, sizeof(fl_team));
    if (!t)
        return NULL;
    t->n = n;
    t->pid = getpid();
    t->threads = (pthread_t *)calloc((size_t)n, sizeof(pthread_t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (!t->threads) {
        free(t);
        return NULL;
    }
    for (int i = 1; i < n; i++) {
        fl_worker_arg *a = (fl_worker_arg *)malloc(sizeof(fl_worker_arg));
        if (!a) {
            t->n = i;
            break;
        }
        a->team = t;
        a->tid = i;
        if (pthread_create(&t->threads[i], NULL, fl_worker, a) != 0) {
            free(a);
            t->n = i;
            break;
        }
    }
    if (t->n < 2) {  /* no worker could start */
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t->threads);
        free(t);
        return NULL;
    }
    return t;
}

/* Claim the team for one job; 0 if another caller is using it, or if this is a
 * forked child (its copy of the team has no worker threads: waiting for them
 * would hang). */
static int fl_team_acquire(fl_team *t) {
    int expected = 0;
    return t && t->pid == getpid() && atomic_compare_exchange_strong(&t->busy, &expected, 1);
}

static void fl_team_release(fl_team *t) { atomic_store(&t->busy, 0); }

/* Run task on every thread; the team must have been acquired. */
static void fl_team_run(fl_team *t, fl_task task, void *arg) {
    unsigned int csr = FL_GET_CSR();
    FL_SET_CSR(csr | FL_FTZ_DAZ);
    t->task = task;
    t->arg = arg;
    atomic_store(&t->done, 0);
    atomic_store(&t->bar_count, 0);
    atomic_store(&t->bar_sense, 0);
    atomic_fetch_add_explicit(&t->generation, 1, memory_order_acq_rel);
    if (atomic_load(&t->sleepers) > 0) {
        pthread_mutex_lock(&t->mu);
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
    task(arg, 0, t->n);
    while (atomic_load_explicit(&t->done, memory_order_acquire) != t->n - 1)
        FL_PAUSE();
    FL_SET_CSR(csr);
}

static int fl_team_size(fl_team *t) { return t ? t->n : 1; }

/* Run task on the calling thread alone, with denormals flushed like the team's
 * workers (and the caller's MXCSR restored after). */
static void fl_run_single(fl_task task, void *arg) {
    unsigned int csr = FL_GET_CSR();
    FL_SET_CSR(csr | FL_FTZ_DAZ);
    task(arg, 0, 1);
    FL_SET_CSR(csr);
}

static void fl_team_destroy(fl_team *t) {
    if (!t)
        return;
    if (t->pid != getpid()) {   /* a forked child: the threads are not ours to join */
        return;
    }
    atomic_store(&t->stop, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    for (int i = 1; i < t->n; i++)
        pthread_join(t->threads[i], NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->threads);
    free(t);
}

#endif
