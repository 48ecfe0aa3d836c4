//! Progress on the terminal for long control-plane commands: a spinner with the
//! current step and the time taken so far, on stderr and only when it is a
//! terminal. Library code reports steps with [`step`]; without a spinner in scope
//! (the server's schedules, tests) that does nothing.

use std::future::Future;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

tokio::task_local! {
    static BAR: ProgressBar;
}

/// Runs `f` with a spinner labelled `prefix`.
pub async fn with_spinner<F: Future>(prefix: &str, f: F) -> F::Output {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    let out = BAR.scope(bar.clone(), f).await;
    bar.finish_and_clear();
    out
}

/// Names the step now running.
pub fn step(msg: &str) {
    let _ = BAR.try_with(|b| b.set_message(msg.to_owned()));
}
