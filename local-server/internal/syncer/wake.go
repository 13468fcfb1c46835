package syncer

// Wake wakes the relay only, after a commit wrote a live change's outbox
// row. A save gives the backfill no work (it queues its own record), so it
// does not wake the backfill either: every wake-up of an idle backfill
// recounts its remaining work, a scan of every table, and with a wake-up per
// save that recount took a quarter of sc-local's CPU at a few hundred saves
// a second (docs/performance.md). Notify is for what can give the backfill
// work: a scope change, an import, a record's sync choice.
func (s *Syncer) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
