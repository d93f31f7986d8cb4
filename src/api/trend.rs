//! `GET /incidents/{id}/trend` and `GET /trend`: the trend counters
//! ([`crate::store::trend`]) as JSON.
//!
//! `?bucket=1m` (the default: per minute, the last 24 h) or `?bucket=1h` (per hour, the
//! last 30 days). The answer lists the non-empty buckets, oldest first:
//!
//! ```json
//! {"bucket": "1m", "from": "...", "to": "...", "total": 7,
//!  "points": [{"start": "2026-12-06T09:14:00Z", "count": 7}]}
//! ```
//!
//! `from` is the start of the oldest bucket kept, `to` the time of the answer; a bucket
//! absent from `points` had no occurrence. `GET /incidents/{id}/trend` adds `incident_id`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use serde::Serialize;

use super::{ApiError, ApiState, blocking, clip};
use crate::store::trend::{Bucket, TrendPoint};

/// A trend answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TrendAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    incident_id: Option<String>,
    bucket: &'static str,
    from: Timestamp,
    to: Timestamp,
    total: u64,
    points: Vec<TrendPoint>,
}

impl TrendAnswer {
    fn new(
        incident_id: Option<String>,
        bucket: Bucket,
        now: Timestamp,
        points: Vec<TrendPoint>,
    ) -> TrendAnswer {
        let now_us = u64::try_from(now.as_microsecond()).unwrap_or(0);
        TrendAnswer {
            incident_id,
            bucket: bucket.as_str(),
            from: bucket.start(bucket.oldest_kept(now_us)),
            to: now,
            total: points.iter().map(|p| p.count).sum(),
            points,
        }
    }
}

/// Parses `?bucket=`; anything else is 400.
pub(crate) fn parse_bucket(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Bucket, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let mut bucket = Bucket::Minute;
    for (k, v) in &params {
        match k.as_str() {
            "bucket" => {
                bucket = Bucket::from_name(v).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("bucket {:?} is not one of 1m, 1h", clip(v)),
                    )
                })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown query parameter {:?}; use bucket", clip(other)),
                ));
            }
        }
    }
    Ok(bucket)
}

#[utoipa::path(get, path = "/incidents/{id}/trend", params(("id" = String, Path, description = "incident id"), ("bucket" = Option<String>, Query, description = "`1m` (default: per minute, the last 24 h) or `1h` (per hour, the last 30 days)")), responses((status = 200, description = "`{\"incident_id\", \"bucket\", \"from\", \"to\", \"total\", \"points\": [{\"start\", \"count\"}]}`: the non-empty buckets, oldest first", body = TrendAnswer), (status = 400, description = "bad bucket or unknown parameter", body = crate::api::schema::ErrorBody), (status = 404, description = "no such incident", body = crate::api::schema::ErrorBody)))]
pub(super) async fn incident_trend(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TrendAnswer>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let bucket = parse_bucket(query)?;
    let store = s.store.clone();
    let now = Timestamp::now();
    let key = id.clone();
    let points = blocking(move || store.incident_trend(&key, bucket, now)).await?;
    match points {
        Some(points) => Ok(Json(TrendAnswer::new(Some(id), bucket, now, points))),
        None => Err(ApiError::not_found(format!(
            "no incident with id {:?}",
            clip(&id)
        ))),
    }
}

#[utoipa::path(get, path = "/trend", params(("bucket" = Option<String>, Query, description = "`1m` (default: per minute, the last 24 h) or `1h` (per hour, the last 30 days)")), responses((status = 200, description = "`{\"bucket\", \"from\", \"to\", \"total\", \"points\": [{\"start\", \"count\"}]}`: occurrences of all incidents, the non-empty buckets, oldest first", body = TrendAnswer), (status = 400, description = "bad bucket or unknown parameter", body = crate::api::schema::ErrorBody)))]
pub(super) async fn total_trend(
    State(s): State<Arc<ApiState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TrendAnswer>, ApiError> {
    let bucket = parse_bucket(query)?;
    let store = s.store.clone();
    let now = Timestamp::now();
    let points = blocking(move || store.total_trend(bucket, now)).await?;
    Ok(Json(TrendAnswer::new(None, bucket, now, points)))
}
