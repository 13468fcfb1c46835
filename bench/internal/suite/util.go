package suite

import "math"

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// mib is bytes in MiB, one decimal.
func mib(b int64) float64 { return round1(float64(b) / (1 << 20)) }
