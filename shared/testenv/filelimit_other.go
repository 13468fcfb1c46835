//go:build !unix

package testenv

// raiseFileLimit: private brokers run on Unix only.
func raiseFileLimit() {}
