//! The REST service (axum): jobs, schedules, mix previews, the durable job store and auth,
//! exposed as `app(state) -> Router` so tests call routes without a socket.
//!
//! The service arrives with the service issue; until then sluice runs from the command line.
