package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// Backups are encrypted on the clinic with age (X25519 recipients,
// ChaCha20-Poly1305 in 64 KiB authenticated chunks) before they leave the
// machine: S3 and the cloud hold only ciphertext, and a changed byte fails
// the restore. Key custody (docs/backup.md): every backup is encrypted to
// the clinic's recovery key (an age identity file, generated at first
// start when missing, which the clinic's IT keeps a copy of off the
// machine) and to any further recipients configured (backup.recipients:
// the IT department's offline key, the operator's escrow key). Restoring
// needs one of the matching identities.

// ErrNoIdentity: a restore without the recovery key.
var ErrNoIdentity = errors.New("backup: no backup recovery key")

// Keys are the recipients a backup is encrypted to.
type Keys struct {
	recipients []age.Recipient
}

// LoadKeys reads (creating it, mode 0600, when missing) the recovery
// identity at identityFile and parses the extra recipients. created tells
// that a new recovery key was made: its owner must copy it off the machine.
func LoadKeys(identityFile string, extra []string) (k Keys, created bool, err error) {
	if _, err := os.Stat(identityFile); errors.Is(err, os.ErrNotExist) {
		if err := GenerateIdentity(identityFile); err != nil {
			return k, false, err
		}
		created = true
	}
	ids, err := readIdentities(identityFile)
	if err != nil {
		return k, created, err
	}
	for _, id := range ids {
		x, ok := id.(*age.X25519Identity)
		if !ok {
			return k, created, fmt.Errorf("backup: %s: only X25519 (AGE-SECRET-KEY-1…) identities are supported", identityFile)
		}
		k.recipients = append(k.recipients, x.Recipient())
	}
	for _, r := range extra {
		if strings.TrimSpace(r) == "" {
			continue
		}
		rec, err := age.ParseX25519Recipient(strings.TrimSpace(r))
		if err != nil {
			return k, created, fmt.Errorf("backup.recipients: %w", err)
		}
		k.recipients = append(k.recipients, rec)
	}
	return k, created, nil
}

// GenerateIdentity writes a new age identity to path (mode 0600) in
// age-keygen's format, with its public key as a comment.
func GenerateIdentity(path string) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	body := fmt.Sprintf("# scsync backup recovery key: keep a copy OFF this machine (docs/backup.md)\n# created: %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := f.WriteString(body); err != nil {
		_ = f.Close()
		return fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("backup: %w", err)
	}
	return f.Close()
}

func readIdentities(path string) ([]age.Identity, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoIdentity, path)
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("backup: %s: %w", path, err)
	}
	return ids, nil
}

// encrypt streams src into dst encrypted to k's recipients.
func (k Keys) encrypt(dst io.Writer, src io.Reader) error {
	if len(k.recipients) == 0 {
		return errors.New("backup: no recipient to encrypt to")
	}
	w, err := age.Encrypt(dst, k.recipients...)
	if err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	return nil
}

// decrypter opens an encrypted backup with the identities in
// identityFile; a wrong key or a changed byte is an error (age
// authenticates every chunk, and the last one says it is the last).
func decrypter(src io.Reader, identityFile string) (io.Reader, error) {
	ids, err := readIdentities(identityFile)
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(src, ids...)
	if err != nil {
		return nil, fmt.Errorf("backup: decrypt with %s: %w", identityFile, err)
	}
	return r, nil
}
