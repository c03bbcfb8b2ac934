"""The transparency-log formats Corral's audit log is served and verified in: RFC 9162 Merkle
trees (`merkle`), C2SP signed notes (`note`), checkpoints (`checkpoint`), witness cosignatures
(`cosignature`), tiles and entry bundles (`tiles`) and proofs (`proof`). Pure code: no storage,
no I/O."""
