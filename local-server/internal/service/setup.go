package service

// FirewallRule is the name of the inbound rule the MSI adds.
const FirewallRule = "scsync clinic server"

// ExampleConfig is the example config installed next to sc-local.exe.
const ExampleConfig = "sc-local.example.yaml"

// firewallAdd is the netsh command line that lets the clinic's viewers reach
// sc-local: inbound TCP to this program (whatever port listen names), on
// domain and private networks only (never on a public Wi-Fi profile).
func firewallAdd(exe string) []string {
	return []string{"advfirewall", "firewall", "add", "rule", "name=" + FirewallRule, "dir=in", "action=allow",
		"program=" + exe, "protocol=TCP", "profile=domain,private", "enable=yes"}
}

// firewallDelete removes the rule (no error if it is not there is checked by
// the caller).
func firewallDelete() []string {
	return []string{"advfirewall", "firewall", "delete", "rule", "name=" + FirewallRule}
}

// lockDown is the icacls command line that leaves dir (and what it holds)
// to SYSTEM (S-1-5-18, the service's account) and Administrators
// (S-1-5-32-544) only: the config holds the clinic's tokens and the database
// patient records, and ProgramData lets every user read by default. SIDs,
// not names, because the names are translated on non-English Windows.
func lockDown(dir string) []string {
	return []string{dir, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "/T", "/C", "/Q"}
}
