//! Stdin feeding: the job's normalised tar (its blob, a file the package stage wrote) goes
//! byte for byte into the container's stdin, after the command line when the container is
//! a warm one; the image's own `tar` unpacks it into `/work`. Nothing is walked or built on
//! the host at run time, and memory stays flat (one chunk in flight) whatever the tree's
//! size.
//!
//! Feeding runs in its own task beside the run loop: a container that never reads its
//! stdin blocks only this task, never the loop that drains output and watches the deadline.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Chunk size of the tar stream into the container.
const CHUNK: usize = 64 * 1024;

/// Writes `line` (if any) then everything `tar` yields into `input`, then closes it.
///
/// A failed write means the container stopped reading (it exited, was killed, or its `tar`
/// gave up): not an error here, the run's outcome says what happened. A failed read is
/// ours, and is returned.
pub(super) async fn feed(
    line: Option<Vec<u8>>,
    mut tar: impl AsyncRead + Unpin,
    mut input: Pin<Box<dyn AsyncWrite + Send>>,
) -> std::io::Result<()> {
    if let Some(line) = line {
        if input.write_all(&line).await.is_err() {
            return Ok(());
        }
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tar.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if input.write_all(&buf[..n]).await.is_err() {
            return Ok(());
        }
    }
    // Closing our side closes the container's stdin (`stdin_once`): its `tar` sees EOF.
    let _ = input.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_line_comes_first_then_the_tar_then_eof() {
        let (ours, mut theirs) = tokio::io::duplex(8);
        let tar = std::io::Cursor::new(vec![7u8; 100_000]);
        let task = tokio::spawn(feed(Some(b"cmd\n".to_vec()), tar, Box::pin(ours)));
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(&got[..4], b"cmd\n");
        assert_eq!(got.len(), 4 + 100_000);
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_is_not_an_error() {
        let (ours, theirs) = tokio::io::duplex(8);
        drop(theirs);
        let tar = std::io::Cursor::new(vec![7u8; 100_000]);
        feed(None, tar, Box::pin(ours)).await.unwrap();
    }
}
