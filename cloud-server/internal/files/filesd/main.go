// Command filesd serves the file API of sc-cloud on its own, with static
// clinic tokens, for the clinic's transfer tests (local-server cannot import
// cloud-server's packages, so its tests start this binary against the real
// PostgreSQL and MinIO) and for manual trials. It is not a production
// server: sc-cloud mounts the same routes behind its real authentication.
//
//	filesd -postgres URL -s3-endpoint http://127.0.0.1:9000 -bucket b \
//	       -clinic 1=token-one -clinic 2=token-two [-ephemeral]
//
// It prints "filesd listening on http://ADDR" once it serves. With
// -ephemeral it creates the bucket and, on SIGTERM/SIGINT, deletes every
// object, upload and the bucket. GET /debug/relayed returns the byte
// counters (files.Relayed); POST /debug/sweep?older_than=1s sweeps.
package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/schema"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "filesd:", err)
		os.Exit(1)
	}
}

type clinicTokens map[string]ids.ID

func (c clinicTokens) String() string { return fmt.Sprintf("%d clinics", len(c)) }

func (c clinicTokens) Set(v string) error {
	id, tok, ok := strings.Cut(v, "=")
	clinic, err := ids.Parse(id)
	if !ok || err != nil || clinic == 0 || len(tok) < 8 {
		return errors.New("want CLINIC_ID=TOKEN (token of 8+ characters)")
	}
	c[tok] = clinic
	return nil
}

func run(ctx context.Context, args []string) error {
	cfg := files.DefaultConfig()
	s3c := blob.Config{Region: "us-east-1", PathStyle: true}
	tokens := clinicTokens{}
	fs := flag.NewFlagSet("filesd", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	pg := fs.String("postgres", "", "PostgreSQL URL (required)")
	ephemeral := fs.Bool("ephemeral", false, "create the bucket; delete it and everything in it on exit")
	verbose := fs.Bool("v", false, "log at debug level")
	fs.StringVar(&s3c.Endpoint, "s3-endpoint", "http://127.0.0.1:9000", "S3 endpoint")
	fs.StringVar(&s3c.AccessKey, "s3-access-key", os.Getenv("FILESD_S3_ACCESS_KEY"), "S3 access key (or $FILESD_S3_ACCESS_KEY)")
	fs.StringVar(&s3c.SecretKey, "s3-secret-key", os.Getenv("FILESD_S3_SECRET_KEY"), "S3 secret key (or $FILESD_S3_SECRET_KEY)")
	fs.StringVar(&cfg.Bucket, "bucket", "", "bucket (required)")
	fs.StringVar(&cfg.PublicEndpoint, "public-endpoint", "", "endpoint in presigned URLs")
	fs.DurationVar(&cfg.URLExpiry, "url-expiry", cfg.URLExpiry, "presigned URL expiry")
	fs.Int64Var(&cfg.MultipartThreshold, "multipart-threshold", cfg.MultipartThreshold, "multipart from this size")
	fs.Int64Var(&cfg.PartSize, "part-size", cfg.PartSize, "preferred part size")
	fs.Var(tokens, "clinic", "CLINIC_ID=TOKEN (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pg == "" || len(tokens) == 0 {
		return errors.New("-postgres, -bucket and at least one -clinic are required")
	}
	s3c.Bucket = cfg.Bucket
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	db, err := gorm.Open(postgres.Open(*pg), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true,
		NowFunc: func() time.Time { return time.Now().UTC() }})
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	defer sqlDB.Close()
	if err := schema.Migrate(ctx, sqlDB); err != nil {
		return err
	}
	client := files.NewS3Client(s3c)
	if *ephemeral {
		if err := blob.New(s3c).EnsureBucket(ctx); err != nil {
			return err
		}
		defer dropBucket(client, cfg.Bucket, log)
	}
	svc, err := files.New(cfg, db, client, nil, log)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	svc.Register(mux, func(h files.Handler) http.HandlerFunc { return auth(tokens, h, log) })
	mux.HandleFunc("GET /debug/relayed", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, svc.Relayed())
	})
	mux.HandleFunc("POST /debug/sweep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("older_than"))
		if err != nil {
			httpapi.WriteError(w, log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "older_than must be a duration"))
			return
		}
		n, err := svc.Sweep(r.Context(), d)
		if err != nil {
			httpapi.WriteError(w, log, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]int{"aborted": n})
	})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	srv := httpapi.NewServer("", httpapi.Recover(log, mux))
	srv.ReadTimeout = 0 // complete may verify for a while; bodies are small JSON
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Printf("filesd listening on http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// auth maps the bearer token to its clinic; a token works for its own
// clinic only, and another clinic's path answers 404 like a missing one.
func auth(tokens clinicTokens, h files.Handler, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var clinic ids.ID
		for t, c := range tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
				clinic = c
			}
		}
		if clinic == 0 {
			httpapi.WriteError(w, log, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "missing or unknown bearer token"))
			return
		}
		if r.PathValue("clinic") != clinic.String() {
			httpapi.WriteError(w, log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic"))
			return
		}
		if err := h(w, r, clinic); err != nil {
			httpapi.WriteError(w, log, err)
		}
	}
}

// dropBucket deletes every object and open upload of bucket, then bucket.
func dropBucket(c *s3.Client, bucket string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := blob.DropBucket(ctx, c, bucket); err != nil {
		log.Warn("delete bucket failed", "bucket", bucket, "err", err)
	}
}
