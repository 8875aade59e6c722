//! The CPU pool: signing, encrypting, decrypting and verifying run here, off tokio's worker
//! threads, at most one job per core at a time. On the async workers an RSA operation or a
//! megabyte of AES would hold up every other session on that thread; with the pool, one
//! session's decryption runs on one core while another's, or its own next message, runs on the
//! other, and the workers keep answering. Bounded, so a burst of work queues here instead of
//! starting hundreds of blocking threads that would only fight over the same cores.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// How many jobs run at once: one per core the process may use.
pub fn width() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn permits() -> &'static Semaphore {
    static P: OnceLock<Semaphore> = OnceLock::new();
    P.get_or_init(|| Semaphore::new(width()))
}

/// Runs `job` on the pool and returns its result; waits (without blocking a worker) while every
/// core is busy. A job that panics is reported as a panic of the caller, as if it had run
/// inline.
pub async fn run<T, F>(job: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _permit = permits().acquire().await.expect("the pool is never closed");
    match tokio::task::spawn_blocking(job).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a CPU job was cancelled: {e}"),
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
}
