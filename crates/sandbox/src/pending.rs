//! Work started on a thread of its own while the caller goes on with its
//! own start-up: `clawkeep run` makes the run's cgroups this way.
//! Dropped before it was waited for (an early way out of the run), it
//! joins the thread and hands the result to a clean-up (removing the
//! cgroups), so nothing is left behind.

use std::thread::JoinHandle;

pub struct Pending<T: Send + 'static> {
    thread: Option<JoinHandle<T>>,
    /// What a result nobody took is given to.
    unused: fn(T),
}

impl<T: Send + 'static> Pending<T> {
    /// Starts `work` on a thread named `name`.
    pub fn spawn(name: &str, work: impl FnOnce() -> T + Send + 'static, unused: fn(T)) -> Pending<T> {
        Pending { thread: std::thread::Builder::new().name(name.into()).spawn(work).ok(), unused }
    }

    /// The result; None when the thread could not be started or panicked.
    pub fn wait(mut self) -> Option<T> {
        self.thread.take()?.join().ok()
    }
}

impl<T: Send + 'static> Drop for Pending<T> {
    fn drop(&mut self) {
        if let Some(Ok(v)) = self.thread.take().map(JoinHandle::join) {
            (self.unused)(v);
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("running", &self.thread.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static UNUSED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_result_nobody_took_is_cleaned_up_and_a_taken_one_is_not() {
        let taken = Pending::spawn(
            "t1",
            || 3usize,
            |n| {
                UNUSED.fetch_add(n, Ordering::SeqCst);
            },
        );
        assert_eq!(taken.wait(), Some(3));
        assert_eq!(UNUSED.load(Ordering::SeqCst), 0);
        drop(Pending::spawn(
            "t2",
            || 5usize,
            |n| {
                UNUSED.fetch_add(n, Ordering::SeqCst);
            },
        ));
        assert_eq!(UNUSED.load(Ordering::SeqCst), 5);
        let panicked: Pending<usize> = Pending::spawn("t3", || panic!("on purpose"), |_| unreachable!());
        assert_eq!(panicked.wait(), None);
    }
}
