//! The CPU pool: signing, encrypting, decrypting and verifying run here, off tokio's worker
//! threads, on one thread per core. On the async workers an RSA operation or a megabyte of AES
//! would hold up every other session on that thread; with the pool, one session's decryption
//! runs on one core while another's, or its own next message, runs on the other, and the workers
//! keep answering. Bounded, so a burst of work queues here instead of starting hundreds of
//! blocking threads that would only fight over the same cores.
//!
//! Why threads of its own rather than tokio's blocking pool behind a semaphore (what this was
//! before): there every job was a semaphore wait, a hand-over to whichever blocking thread was
//! idle (tokio kept six of them for two permits) and a permit hand-over to the next waiting task,
//! each a wake-up of another thread. Here a pool thread that finishes a job takes the next one
//! from the queue itself; only the result goes back to the waiting task.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

/// How many jobs run at once: one per core the process may use.
pub fn width() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

type Task = Box<dyn FnOnce() + Send>;

/// The queue the pool's threads take jobs from (started on first use).
fn queue() -> &'static mpsc::Sender<Task> {
    static Q: OnceLock<mpsc::Sender<Task>> = OnceLock::new();
    Q.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..width() {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("envelopd-cpu-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, not while it runs.
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(task) => task(),
                        Err(_) => return,
                    }
                })
                .expect("the CPU pool's threads start");
        }
        tx
    })
}

/// Runs `job` on the pool and returns its result; waits (without blocking a worker) while every
/// core is busy. A job that panics is reported as a panic of the caller, as if it had run
/// inline.
pub async fn run<T, F>(job: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        // The caller may have gone away meanwhile (a client that hung up): nobody to tell.
        let _ = tx.send(outcome);
    });
    queue()
        .send(task)
        .expect("the CPU pool's threads never stop");
    match rx.await.expect("a CPU job always answers") {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs every job on the pool at once (as many at a time as there are cores) and returns their
/// results in the jobs' order, whatever order they finish in; a job that panics panics the
/// caller. What the IMAP and POP3 sessions open a batch of stored messages with.
pub async fn run_all<T, F>(jobs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let running: Vec<_> = jobs.into_iter().map(|job| tokio::spawn(run(job))).collect();
    let mut results = Vec::with_capacity(running.len());
    for job in running {
        match job.await {
            Ok(v) => results.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_in_parallel_but_never_more_than_one_per_core() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..4 * width())
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                }))
            })
            .collect();
        let mut sum = 0;
        for j in jobs {
            sum += j.await.unwrap();
        }
        assert_eq!(sum, (0..4 * width()).sum::<usize>());
        let most = most.load(Ordering::SeqCst);
        assert!(most <= width(), "{most} jobs at once on {} cores", width());
        if width() > 1 {
            assert!(most > 1, "the jobs ran one at a time");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all_answers_in_the_jobs_order_not_the_finishing_order() {
        let jobs = (0..6u64).map(|i| {
            move || {
                // The first jobs take longest: they finish last.
                std::thread::sleep(std::time::Duration::from_millis(5 * (6 - i)));
                i
            }
        });
        assert_eq!(run_all(jobs).await, vec![0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    #[should_panic(expected = "boom")]
    async fn a_panicking_job_panics_its_caller() {
        run(|| panic!("boom")).await
    }

    /// A job whose caller went away (a client that hung up) still finishes, and neither it nor a
    /// panicking job takes a pool thread with it: every later job still runs, on the pool's own
    /// threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_go_away_or_panic_leave_the_pool_whole() {
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 * width() {
            let f = finished.clone();
            let (started, running) = tokio::sync::oneshot::channel();
            let caller = tokio::spawn(run(move || {
                let _ = started.send(());
                std::thread::sleep(std::time::Duration::from_millis(20));
                f.fetch_add(1, Ordering::SeqCst);
            }));
            running.await.unwrap();
            caller.abort();
            let _ = tokio::spawn(run(|| panic!("a job's own failure"))).await;
        }
        let names = run_all(
            (0..4 * width()).map(|_| || std::thread::current().name().unwrap_or("").to_string()),
        )
        .await;
        assert!(
            names.iter().all(|n| n.starts_with("envelopd-cpu-")),
            "{names:?}"
        );
        // Abandoned jobs finish on their own time: wait for them (a second at most).
        for _ in 0..200 {
            if finished.load(Ordering::SeqCst) == 2 * width() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(finished.load(Ordering::SeqCst), 2 * width());
    }
}
