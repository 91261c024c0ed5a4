//! Running a loader: in the caller's task (borrowed loaders, `get_or_load`), or with timeouts and
//! background completion (owned loaders, `get_or_load_owned`).
//!
//! A borrowed loader (`FnOnce() -> Fut` that may borrow from the caller) cannot outlive the call,
//! so it can neither finish in the background after a soft timeout nor be started again later for
//! an eager refresh, and its error type is the caller's own, so a timeout has no error to become.
//! An owned loader (`Send + 'static`) is boxed into an [`OwnedLoader`] and can do all of that. The
//! read path (`load.rs`) is written once over the [`Loader`] trait; the two kinds differ only in
//! [`Loader::run`] and [`Loader::into_owned`]. This module knows nothing of the cache: a load that
//! goes on in the background is handed back to the read path's `detach` callback, which finishes it
//! with the same guards as any load.

use futures::future::BoxFuture;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A loader that can move into a spawned task.
///
/// A struct rather than a type alias of the box: an `impl Loader for Box<dyn ... + 'static>` makes
/// rustc fail to prove the spawned futures `Send` ("implementation is not general enough", from the
/// lifetimes it erases while checking auto traits); a struct's header has no lifetime to erase.
///
/// `H` is what a hard timeout reports to the callers: [`Duration`] for
/// `Cache::get_or_load_owned`; [`Infallible`] for callers with no error of the cache's own to
/// return (a `#[cached]` function returning `T`), whose loads have no hard timeout.
pub(crate) struct OwnedLoader<T, E, H = Duration>(
    Box<dyn FnOnce() -> BoxFuture<'static, Result<T, E>> + Send>,
    std::marker::PhantomData<fn() -> H>,
);

impl<T, E, H> OwnedLoader<T, E, H> {
    pub(crate) fn call(self) -> BoxFuture<'static, Result<T, E>> {
        (self.0)()
    }
}

/// Wraps an owned loader closure.
pub(crate) fn owned<T, E, H, F, Fut>(loader: F) -> OwnedLoader<T, E, H>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    OwnedLoader(
        Box::new(move || Box::pin(loader())),
        std::marker::PhantomData,
    )
}

/// What a hard timeout reports, if loads of this kind can have one.
#[doc(hidden)]
pub trait HardTimeout: Clone + Send + Sync + Sized + 'static {
    /// The report of a load abandoned after `after`; `None`: this caller has no hard timeout (the
    /// loader is then awaited to its end).
    fn report(after: Duration) -> Option<Self>;
}

impl HardTimeout for Duration {
    fn report(after: Duration) -> Option<Self> {
        Some(after)
    }
}

impl HardTimeout for Infallible {
    fn report(_: Duration) -> Option<Self> {
        None
    }
}

/// An owned loader made only when a load or a refresh needs it, so that a hit costs no copy of
/// what the loader captures (the `#[cached]` macro builds owned copies of borrowed arguments).
pub(crate) struct Lazy<M>(pub(crate) M);

impl<T, E, H, M> Loader<T, E> for Lazy<M>
where
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
    M: FnOnce() -> OwnedLoader<T, E, H>,
{
    type TimedOut = H;

    fn into_owned(self) -> Result<OwnedLoader<T, E, H>, Self> {
        Ok((self.0)())
    }

    async fn run<J: Send + 'static>(
        self,
        job: J,
        t: Timeouts<T>,
        detach: impl Detach<T, E, J>,
    ) -> Run<T, E, H, J> {
        (self.0)().run(job, t, detach).await
    }
}

/// How a load through `Cache::get_or_load_lazy` failed.
pub(crate) enum LazyError<E, H> {
    /// The loader's error.
    Loader(Arc<E>),
    /// The load was abandoned at its hard timeout.
    TimedOut(H),
}

/// A borrowed loader, run in the caller's task.
pub(crate) struct InPlace<F>(pub(crate) F);

/// The loader's timeouts for one load. `soft` comes with the stale value it serves.
pub(crate) struct Timeouts<T> {
    pub(crate) soft: Option<(Duration, Arc<T>)>,
    pub(crate) hard: Option<Duration>,
}

/// How a loader run ended. `J` is the read path's record of the load.
pub(crate) enum Run<T, E, X, J> {
    Done(J, Result<T, E>),
    /// The hard timeout passed (`X` is uninhabited for borrowed loaders, which have none).
    TimedOut(J, X),
    /// The soft timeout passed: serve this stale value; the loader goes on in the background,
    /// handed to the [`Detach`] callback.
    Detached(Arc<T>),
}

/// What the rest of a load that went on in the background produced: its result, or `None` when
/// it was abandoned at its hard timeout.
pub(crate) type Rest<T, E> = BoxFuture<'static, Option<Result<T, E>>>;

/// Finishes a load that went on in the background past its soft timeout.
pub(crate) trait Detach<T, E, J>: Send {
    /// Takes the job and the rest of the load (to run it to its end and store its result).
    fn detach(self, job: J, rest: Rest<T, E>);
}

/// A loader, borrowed or owned.
pub(crate) trait Loader<T, E>: Sized {
    /// What a hard timeout reports (`Infallible` when there can be none).
    type TimedOut: HardTimeout;

    /// The loader as an [`OwnedLoader`], or itself back when it borrows from the caller.
    fn into_owned(self) -> Result<OwnedLoader<T, E, Self::TimedOut>, Self>;

    /// Calls the loader under `timeouts` (where it can honour them).
    async fn run<J: Send + 'static>(
        self,
        job: J,
        timeouts: Timeouts<T>,
        detach: impl Detach<T, E, J>,
    ) -> Run<T, E, Self::TimedOut, J>;
}

impl<T, E, F, Fut> Loader<T, E> for InPlace<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type TimedOut = Infallible;

    fn into_owned(self) -> Result<OwnedLoader<T, E, Infallible>, Self> {
        Err(self)
    }

    async fn run<J: Send + 'static>(
        self,
        job: J,
        _: Timeouts<T>,
        _: impl Detach<T, E, J>,
    ) -> Run<T, E, Infallible, J> {
        Run::Done(job, (self.0)().await)
    }
}

impl<T, E, H> Loader<T, E> for OwnedLoader<T, E, H>
where
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
{
    type TimedOut = H;

    fn into_owned(self) -> Result<OwnedLoader<T, E, H>, Self> {
        Ok(self)
    }

    async fn run<J: Send + 'static>(
        self,
        job: J,
        t: Timeouts<T>,
        detach: impl Detach<T, E, J>,
    ) -> Run<T, E, H, J> {
        let mut fut = self.call();
        // A caller that cannot report a hard timeout has none.
        let hard = t.hard.filter(|d| H::report(*d).is_some());
        // `Freshness::resolve` keeps a soft timeout only below the hard one.
        let first = t.soft.as_ref().map(|(d, _)| *d).or(hard);
        let Some(first) = first else {
            return Run::Done(job, fut.await);
        };
        match tokio::time::timeout(first, &mut fut).await {
            Ok(res) => Run::Done(job, res),
            Err(_) => match t.soft {
                Some((soft, stale)) => {
                    let rest = hard.map(|h| h.saturating_sub(soft));
                    detach.detach(
                        job,
                        Box::pin(async move {
                            match rest {
                                Some(d) => tokio::time::timeout(d, fut).await.ok(),
                                None => Some(fut.await),
                            }
                        }),
                    );
                    Run::Detached(stale)
                }
                None => match H::report(first) {
                    Some(x) => Run::TimedOut(job, x),
                    // Not reached (`hard` is `None` for such callers): wait for the loader.
                    None => Run::Done(job, fut.await),
                },
            },
        }
    }
}
