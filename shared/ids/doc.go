// Package ids mints the Snowflake ids every record, change and message of
// scsync carries, on clinics and cloud nodes alike, with one bit layout.
//
// Layout of a 63-bit id (the sign bit stays 0):
//
//		| 41 bits: milliseconds since 2024-01-01 UTC | 14 bits: node | 8 bits: step |
//
//	  - 41 time bits last 69 years from the epoch (until 2093).
//	  - 14 node bits give 16,384 nodes: 1..12,287 are clinics (a clinic's node id is
//	    assigned once at enrollment and kept forever), 12,288..16,383 are cloud
//	    nodes (leased from Redis while the node runs). Node 0 is never issued.
//	  - 8 step bits give 256 ids per millisecond, 256,000 ids/s per node; when a
//	    millisecond is used up the generator waits for the next one.
//
// The library's default (10 node bits, 12 step bits) allows only 1,024 nodes,
// too few for thousands of clinics that must each mint ids while offline.
//
// Clock rollback: within a process the generator runs on the monotonic clock.
// Across restarts a clinic persists its high-water timestamp (see Generator)
// and, on start, waits until the wall clock has passed it, so a clock set back
// while the server was down can never produce an id twice.
package ids
