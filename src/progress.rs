//! What the commands show while they work: spinners, a bar per stage of table reads, a
//! bar over images, a bar per training epoch.

use std::sync::Mutex;
use std::time::Duration;

use hecnn_runtime::Progress;
use hecnn_train::trainer::{EpochReport, TrainingProgress};
use indicatif::{ProgressBar, ProgressStyle};

/// A spinner for a step of unknown length.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// One progress bar per stage, counting its table reads.
#[derive(Default)]
pub struct StageBars {
    current: Mutex<Option<ProgressBar>>,
}

impl Progress for StageBars {
    fn stage_started(&self, label: &str, reads: usize) {
        let bar = ProgressBar::new(reads as u64).with_style(
            ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} PBS ({elapsed})")
                .expect("the template is valid"),
        );
        bar.set_message(label.to_string());
        *self.current.lock().expect("no panics while held") = Some(bar);
    }

    fn read_done(&self) {
        if let Some(bar) = &*self.current.lock().expect("no panics while held") {
            bar.inc(1);
        }
    }

    fn stage_finished(&self) {
        if let Some(bar) = self.current.lock().expect("no panics while held").take() {
            bar.finish_and_clear();
        }
    }
}

/// A progress bar over `len` images, labelled `label`.
pub fn image_bar(label: &str, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} images ({eta})")
            .expect("the template is valid"),
    );
    bar.set_message(label.to_string());
    bar
}

/// A progress bar per training epoch with the loss and accuracy so far, and a line per
/// finished epoch.
#[derive(Default)]
pub struct EpochBars {
    bar: Option<ProgressBar>,
}

impl TrainingProgress for EpochBars {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, images: usize) {
        let bar = ProgressBar::new(images as u64).with_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, images: usize, loss: f64, accuracy: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(images as u64);
            bar.set_message(format!("loss {loss:.4} acc {:.2}%", 100.0 * accuracy));
        }
    }

    fn epoch_finished(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>3}: loss {:.4}  train {:.2}%  validation {:.2}%  ({:.1} s)",
            r.epoch,
            r.loss,
            100.0 * r.train_accuracy,
            100.0 * r.validation_accuracy,
            r.seconds
        );
    }
}
