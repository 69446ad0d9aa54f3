//! The brand's node streams in the event store, as [`bind`](super::bind) reads and appends to
//! them: the [`Nodes`] the service binds through (the forest's tests bind through streams in
//! memory).

use scanloop_eventstore::{AppendMeta, ExecuteError, Repository};
use scanloop_service::ServiceError;

use super::{BoundParents, Nodes};
use crate::domain::node::{self, Node};
use crate::domain::{ReferralEvent, Rejection};

/// The brand's node streams, as a binding reads and appends to them.
pub(crate) struct NodeStreams<'a> {
    pub(crate) nodes: &'a Repository<Node>,
    pub(crate) parents: &'a BoundParents,
    pub(crate) brand: &'a str,
    pub(crate) meta: AppendMeta,
    pub(crate) reads: NodeReads,
}

/// How [`NodeStreams`] reads an unbound node: as stored now (an answer to a caller), or as the
/// repository remembers it (a binding, whose conditional appends check what it concludes; the
/// repository refreshes what it remembers whenever such an append is refused or collides).
#[derive(Clone, Copy)]
pub(crate) enum NodeReads {
    Stored,
    Remembered,
}

impl Nodes for NodeStreams<'_> {
    async fn node(&self, member: &str) -> Result<Node, ServiceError> {
        let stream = node::stream_id(self.brand, member);
        let loaded = match self.reads {
            NodeReads::Stored => self.nodes.load::<Rejection>(&stream).await?,
            NodeReads::Remembered => self.nodes.remembered_or_load::<Rejection>(&stream).await?,
        };
        let node = loaded.state;
        self.parents.learn(&stream, node.parent.as_deref());
        Ok(node)
    }

    async fn parent(&self, member: &str) -> Result<Option<String>, ServiceError> {
        let stream = node::stream_id(self.brand, member);
        match self.parents.get(&stream) {
            Some(parent) => Ok(Some(parent)),
            None => Ok(self.node(member).await?.parent),
        }
    }

    async fn append<F>(&self, member: &str, decide: F) -> Result<Node, ExecuteError<Rejection>>
    where
        F: Fn(&Node) -> Result<Vec<ReferralEvent>, Rejection> + Send + Sync,
    {
        let stream = node::stream_id(self.brand, member);
        let node = self.nodes.execute(&stream, &self.meta, decide).await?.state;
        self.parents.learn(&stream, node.parent.as_deref());
        Ok(node)
    }
}
