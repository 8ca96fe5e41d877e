//! Streaming an upload to disk: raw body or multipart field `file` (with an optional text
//! field `callback_url`), counted and hashed as it
//! arrives, cut off at the archive limit (413, whether or not `Content-Length` was sent) and
//! when the client stalls.

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::digest::Sha256Digest;
use crate::jobs::Upload;
use crate::store::blobs::create_private_file;
use crate::store::Blobs;

/// A client that sends nothing for this long is cut off (slowloris); the overall request
/// timeout bounds the whole upload.
const STALL: Duration = Duration::from_secs(30);

/// Streams the request's archive into a private temp file in the blob directory, and reads
/// a multipart upload's text fields ([`FormFields`]).
pub async fn receive(
    req: Request,
    blobs: &Blobs,
    limit: u64,
) -> Result<(Upload, FormFields), ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Multipart framing adds a little; the archive itself is counted exactly below.
        if len > limit.saturating_add(64 * 1024) {
            return Err(too_large(limit));
        }
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let path = blobs.temp_path();
    // Removes the partial file if this future is dropped (request timeout, client gone) or
    // fails; disarmed once the upload is handed over.
    let mut guard = TempFile(Some(path.clone()));
    let mut fields = FormFields::default();
    let result = if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text()))?;
        let mut upload = None;
        // Every field is read: `callback_url` may come before or after `file`; other fields
        // are skipped.
        loop {
            let field = form.next_field().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(limit)
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text())
                }
            })?;
            let Some(mut field) = field else { break };
            match field.name() {
                Some("file") if upload.is_none() => {
                    let stream = field.map(|r| {
                        r.map_err(|e| {
                            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                                ChunkError::TooLarge
                            } else {
                                ChunkError::Other(e.body_text())
                            }
                        })
                    });
                    upload = Some(write_stream(stream, path.clone(), limit).await);
                    if matches!(upload, Some(Err(_))) {
                        break;
                    }
                }
                Some("file") => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_multipart",
                        "multipart upload has more than one field named `file`",
                    ))
                }
                Some("callback_url") => {
                    let mut text = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(|e| {
                        ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text())
                    })? {
                        text.extend_from_slice(&chunk);
                        if text.len() > MAX_FIELD_BYTES {
                            return Err(ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "bad_multipart",
                                format!("multipart field `callback_url` is over {MAX_FIELD_BYTES} bytes"),
                            ));
                        }
                    }
                    let text = String::from_utf8(text).map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_multipart",
                            "multipart field `callback_url` is not UTF-8",
                        )
                    })?;
                    if fields
                        .callback_url
                        .replace(text.trim().to_string())
                        .is_some()
                    {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_multipart",
                            "multipart upload has more than one field named `callback_url`",
                        ));
                    }
                }
                _ => {}
            }
        }
        upload.unwrap_or_else(|| {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_file",
                "multipart upload has no field named `file`",
            ))
        })
    } else {
        let stream = req
            .into_body()
            .into_data_stream()
            .map(|r| r.map_err(|e| chunk_error(&e)));
        write_stream(stream, path.clone(), limit).await
    };
    if result.is_ok() {
        guard.0 = None;
    }
    result.map(|upload| (upload, fields))
}

/// The largest text field of a multipart upload.
const MAX_FIELD_BYTES: usize = 4096;

/// The text fields of a multipart upload besides `file`.
#[derive(Debug, Default)]
pub struct FormFields {
    /// `callback_url`: as the query parameter of the same name.
    pub callback_url: Option<String>,
}

struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why reading a chunk of the upload failed.
enum ChunkError {
    /// The body went past the router's size limit.
    TooLarge,
    /// Anything else, with its cause chain.
    Other(String),
}

/// Classifies a raw body error by its type: the router's body limit surfaces as
/// `http_body_util::LengthLimitError` somewhere in the source chain.
fn chunk_error(e: &axum::Error) -> ChunkError {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ChunkError::TooLarge;
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    ChunkError::Other(text)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the archive exceeds the {limit} byte limit"),
    )
}

async fn write_stream(
    mut stream: impl Stream<Item = Result<Bytes, ChunkError>> + Unpin,
    path: PathBuf,
    limit: u64,
) -> Result<Upload, ApiError> {
    // tokio's File runs each write on the blocking pool, so a slow disk (fsync under load)
    // never stalls the runtime threads that answer other requests.
    let mut file = tokio::fs::File::from_std(
        create_private_file(&path)
            .map_err(|e| ApiError::internal("creating the upload file", &e))?,
    );
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    loop {
        let next = tokio::time::timeout(STALL, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "upload_stalled",
                    format!("no data for {}s; upload cut off", STALL.as_secs()),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| match e {
            ChunkError::TooLarge => too_large(limit),
            ChunkError::Other(text) => {
                ApiError::new(StatusCode::BAD_REQUEST, "upload_failed", text)
            }
        })?;
        bytes = bytes.saturating_add(chunk.len() as u64);
        if bytes > limit {
            return Err(too_large(limit));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("writing the upload", &e))?;
    }
    if bytes == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the request has no archive in its body",
        ));
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal("writing the upload", &e))?;
    Ok(Upload {
        path,
        sha256: Sha256Digest::finish(hasher),
        bytes,
    })
}
