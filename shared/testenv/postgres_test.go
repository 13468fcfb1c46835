package testenv

import "testing"

func TestDatabaseURLKeepsPassword(t *testing.T) {
	for _, tc := range []struct{ admin, want string }{
		{"postgres://scsync:scsync@127.0.0.1:5432/postgres?sslmode=disable", "postgres://scsync:scsync@127.0.0.1:5432/t1?sslmode=disable"},
		{"postgres://u:p%40ss@db:6543/postgres", "postgres://u:p%40ss@db:6543/t1?sslmode=disable"},
		{"postgresql://u@h/postgres?sslmode=require", "postgresql://u@h/t1?sslmode=require"},
	} {
		got, err := DatabaseURL(tc.admin, "t1")
		if err != nil || got != tc.want {
			t.Errorf("DatabaseURL(%q) = %q, %v, want %q", tc.admin, got, err, tc.want)
		}
	}
	if _, err := DatabaseURL("mysql://x", "t1"); err == nil {
		t.Errorf("DatabaseURL(mysql://x) = nil error, want one")
	}
}
