//! nftables: a typed IR of the kernel's objects, the renderer that plans kproxy's table from
//! the model, the transaction that carries a ruleset to the kernel, and the emitters.
//!
//! The ruleset is data-driven (shape D of `reference/nft-shapes.md`): every Service shares a few
//! fixed chains, and what changes with the cluster lives as elements of a handful of maps —
//! `service-ips` dispatches a ClusterIP frontend to the shared `pick-<proto>-<count>` chain, which
//! picks a slot with `numgen random` and DNATs through the `endpoints-<proto>` map keyed by
//! frontend and slot. An endpoint change is therefore an element change, never a rule change.

mod apply;
mod diff;
mod inventory;
mod ir;
mod listing;
pub mod names;
mod render;
mod summary;
mod syntax;
mod transaction;
mod validate;

pub use apply::ApplyError;
pub use diff::{Update, diff};
pub use inventory::{ExistingSet, Inventory};
pub use ir::{
    BaseChain, Chain, ChainDecl, ChainType, DataType, Element, ElementValue, Expr, Family, Hook, Rule,
    Ruleset, Set, SetData, SetDecl, SetKey, SetKind, Statement, Table, TableRef, Value, Verdict,
};
pub use listing::Listing;
pub use render::render;
pub use summary::{Drift, TableSummary};
pub use transaction::{Operation, Transaction};
pub use validate::InvalidRuleset;
