//! The `redraft.v1.Generator` gRPC service.

use std::sync::Arc;
use std::time::Instant;

use redraft_proto::generator_server::Generator;
use redraft_proto::{GenerateEvent, GenerateRequest, GeneratorInfo, InfoRequest};
use tokio::sync::{OnceCell, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::GeneratorError;
use crate::request::{Limits, resolve};
use crate::worker::{ModelHandle, WorkItem, event_capacity};

/// The loaded model, with the limits and `Info` response the service uses.
pub struct Loaded {
    /// The model thread.
    pub handle: ModelHandle,
    /// Request limits and defaults.
    pub limits: Limits,
    /// The `Info` response.
    pub info: GeneratorInfo,
}

/// gRPC front of the model thread. Until the model is loaded, calls get UNAVAILABLE.
#[derive(Clone)]
pub struct GeneratorService {
    loaded: Arc<OnceCell<Loaded>>,
}

impl GeneratorService {
    /// Creates a service that serves once `loaded` is set.
    pub fn new(loaded: Arc<OnceCell<Loaded>>) -> Self {
        Self { loaded }
    }

    fn loaded(&self) -> Result<&Loaded, Status> {
        self.loaded
            .get()
            .ok_or_else(|| Status::unavailable("the generator model is still loading"))
    }
}

#[tonic::async_trait]
impl Generator for GeneratorService {
    async fn info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<GeneratorInfo>, Status> {
        Ok(Response::new(self.loaded()?.info.clone()))
    }

    type GenerateStream = ReceiverStream<Result<GenerateEvent, Status>>;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let span = tracing::info_span!("generate", request_id = %request.request_id);
        let outcome = self.start(request, span.clone());
        if let Err(error) = &outcome {
            let _entered = span.enter();
            tracing::warn!(%error, error_type = error.error_type(), "generate request rejected");
            redraft_common::telemetry::record_rpc(
                "generator",
                "generate",
                started.elapsed(),
                Some(error.error_type()),
            );
        }
        Ok(Response::new(outcome?))
    }
}

impl GeneratorService {
    fn start(
        &self,
        request: GenerateRequest,
        span: tracing::Span,
    ) -> Result<ReceiverStream<Result<GenerateEvent, Status>>, GeneratorError> {
        let loaded = self.loaded().map_err(|_| GeneratorError::Unavailable)?;
        let (input, resolved) = resolve(&request, &loaded.limits)?;
        let (events, receiver) = mpsc::channel(event_capacity(&input, &resolved));
        loaded.handle.submit(WorkItem {
            input,
            resolved,
            events,
            queued_at: Instant::now(),
            span,
        })?;
        Ok(ReceiverStream::new(receiver))
    }
}
