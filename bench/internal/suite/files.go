package suite

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Files measures a large image file's upload clinic → S3.
var Files = Bench{
	Name: "files",
	Doc:  "a large file imported on sc-local until the cloud has verified it in S3 (presigned multipart), vs a bare aws-sdk-go-v2 multipart upload to the same MinIO; peak RSS of both",
	Flags: func(fs *flag.FlagSet) RunFunc {
		size := fs.Int64("size", 1<<30, "file size in bytes")
		part := fs.Int64("part-size", 16<<20, "part size of the bare upload (sc-local's default is 16 MiB)")
		conc := fs.Int("concurrency", 2, "parts in flight in the bare upload (sc-local sends 2)")
		timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runFiles(ctx, c, *size, *part, *conc, *timeout)
		}
	},
}

const childBareUpload = "bare-upload"

// bareUploadResult is what the bare upload child prints last.
type bareUploadResult struct {
	Seconds float64 `json:"seconds"`
	PeakRSS int64   `json:"peak_rss"`
}

func runFiles(ctx context.Context, c Config, size, part int64, conc int, timeout time.Duration) ([]results.Result, error) {
	var cl stack.Cleanup
	defer cl.Close()
	dir, err := os.MkdirTemp("", "scsync-bench-file")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "cbct.dcm")
	c.Log.Info("writing the test file", "bytes", size)
	if err := writeRandomFile(path, size); err != nil {
		return nil, err
	}

	// Baseline first: its own bucket, its own process.
	bucket := stack.BucketName("bench-bare-upload")
	if err := c.Env.CreateBucket(ctx, &cl, bucket); err != nil {
		return nil, err
	}
	p, err := startChild(&cl, childBareUpload, "BARE_FILE="+path, "BARE_BUCKET="+bucket,
		"BARE_PART_SIZE="+strconv.FormatInt(part, 10), "BARE_CONCURRENCY="+strconv.Itoa(conc))
	if err != nil {
		return nil, err
	}
	if err := p.Wait(ctx); err != nil {
		return nil, fmt.Errorf("bare upload: %w\n%s", err, p.Output())
	}
	var bare bareUploadResult
	out := strings.TrimSpace(p.Output())
	if err := json.Unmarshal([]byte(out[strings.LastIndexByte(out, '\n')+1:]), &bare); err != nil {
		return nil, fmt.Errorf("bare upload result %q: %w", out, err)
	}
	c.Log.Info("baseline done", "seconds", bare.Seconds)

	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "files")
	if err != nil {
		return nil, err
	}
	clinic, err := a.Enroll(ctx, "Bench CBCT Dental")
	if err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic); err != nil {
		return nil, err
	}
	imageID, err := createImage(ctx, clinic.Base)
	if err != nil {
		return nil, err
	}
	pid := clinic.Proc.Pid()
	// Reset the peak RSS so it covers the upload only.
	_ = os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0)
	u0, err := stack.ReadUsage(pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var imp struct {
		Transfer struct {
			ID     int64  `json:"id"`
			SHA256 string `json:"sha256"`
		} `json:"transfer"`
	}
	if err := stack.Call(ctx, http.MethodPost, clinic.Base+"/v1/files", "", map[string]any{"path": path, "image_id": imageID, "content_type": "application/dicom"}, &imp, http.StatusAccepted); err != nil {
		return nil, err
	}
	// The import answers once sc-local has hashed the file; the parts are
	// all sent when the transfer's live byte count reaches the size (seen
	// at the next poll); the rest is the cloud's complete and verify.
	hashed := time.Since(start)
	var sent time.Duration
	deadline := time.Now().Add(timeout)
	for {
		if sent == 0 {
			var t struct {
				BytesDone int64 `json:"bytes_done"`
			}
			if err := stack.Call(ctx, http.MethodGet, clinic.Base+"/v1/files/"+strconv.FormatInt(imp.Transfer.ID, 10), "", nil, &t, http.StatusOK); err != nil {
				return nil, err
			}
			if t.BytesDone >= size {
				sent = time.Since(start)
			}
		}
		var f struct{ State string }
		err := stack.Call(ctx, http.MethodGet, clinic.CloudPrefix(a.Cloud)+"files/"+imp.Transfer.SHA256, clinic.Token, nil, &f, http.StatusOK)
		var se *stack.StatusError
		if err != nil && (!errors.As(err, &se) || se.Code != http.StatusNotFound) {
			return nil, err
		}
		if f.State == "present" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("file not present in the cloud after %s (state %q)", timeout, f.State)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	if sent == 0 { // present before a poll saw the last byte
		sent = elapsed
	}
	u1, err := stack.ReadUsage(pid)
	if err != nil {
		return nil, err
	}
	mibs := func(sec float64) float64 { return round1(float64(size) / (1 << 20) / sec) }
	params := map[string]any{"file_bytes": size, "bare_part_size": part, "bare_concurrency": conc}
	thr := results.New("files", "file_upload_throughput", "MiB/s", results.HigherBetter, mibs(elapsed.Seconds()), mibs(bare.Seconds))
	thr.Params = params
	thr.Extra = map[string]float64{"ours_seconds": round3(elapsed.Seconds()), "baseline_seconds": round3(bare.Seconds),
		"ours_cpu_seconds": round3((u1.CPU - u0.CPU).Seconds()),
		// ours_seconds in three phases (each to the 100 ms poll):
		"ours_hash_seconds": round3(hashed.Seconds()), "ours_send_seconds": round3((sent - hashed).Seconds()),
		"ours_verify_seconds": round3((elapsed - sent).Seconds())}
	thr.Note = "ours: POST /v1/files on sc-local (SHA-256 of the file, then presigned multipart parts straight to MinIO) until the cloud reports the file present (verified with S3); " +
		"baseline: aws-sdk-go-v2 CreateMultipartUpload/UploadPart/Complete from a process of its own"
	rss := results.New("files", "file_upload_peak_rss", "MiB", results.LowerBetter, mib(u1.PeakRSS), mib(bare.PeakRSS))
	rss.Params = params
	rss.Note = "VmHWM of sc-local, reset just before the import (so: during the upload), vs VmHWM of the bare uploader process"
	return []results.Result{thr, rss}, nil
}

// writeRandomFile writes size bytes of fast pseudo-random (incompressible)
// data.
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.NewChaCha8([32]byte{7})
	if _, err := io.CopyN(w, r, size); err != nil {
		_ = f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// createImage makes a patient, a study and a CBCT image on sc-local and
// returns the image's id.
func createImage(ctx context.Context, base string) (string, error) {
	var rec struct {
		ID string `json:"id"`
	}
	parents := map[wire.Kind]ids.ID{}
	for _, k := range []wire.Kind{wire.KindPatient, wire.KindStudy, wire.KindImage} {
		content := records.Sample(k, 1, parents)
		if img, ok := content.(records.Image); ok {
			img.Modality = "CBCT"
			content = img
		}
		coll := map[wire.Kind]string{wire.KindPatient: "patients", wire.KindStudy: "studies", wire.KindImage: "images"}[k]
		if err := stack.Call(ctx, http.MethodPost, base+"/v1/"+coll, "", map[string]any{"data": content}, &rec, http.StatusCreated); err != nil {
			return "", err
		}
		id, err := ids.Parse(rec.ID)
		if err != nil {
			return "", err
		}
		parents[k] = id
	}
	return rec.ID, nil
}

// bareUpload is the file baseline, run as a child process: a plain
// multipart upload with the SDK, printing its time and peak RSS.
func bareUpload(ctx context.Context) error {
	env := stack.FromEnvironment(nil)
	path, bucket := os.Getenv("BARE_FILE"), os.Getenv("BARE_BUCKET")
	part, err := strconv.ParseInt(os.Getenv("BARE_PART_SIZE"), 10, 64)
	if err != nil {
		return fmt.Errorf("BARE_PART_SIZE: %w", err)
	}
	conc, err := strconv.Atoi(os.Getenv("BARE_CONCURRENCY"))
	if err != nil {
		return fmt.Errorf("BARE_CONCURRENCY: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	c := env.S3()
	key := aws.String("bare/" + filepath.Base(path))
	start := time.Now()
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: key})
	if err != nil {
		return err
	}
	n := int((fi.Size() + part - 1) / part)
	parts := make([]types.CompletedPart, n)
	next := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range conc {
		g.Go(func() error {
			for i := range next {
				off := int64(i) * part
				body := io.NewSectionReader(f, off, min(part, fi.Size()-off))
				out, err := c.UploadPart(gctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: key, UploadId: up.UploadId,
					PartNumber: aws.Int32(int32(i + 1)), Body: body, ContentLength: aws.Int64(body.Size())})
				if err != nil {
					return err
				}
				parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		return err
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: key}); err != nil {
		return err
	}
	elapsed := time.Since(start)
	u, err := stack.ReadUsage(os.Getpid())
	if err != nil {
		return err
	}
	b, err := json.Marshal(bareUploadResult{Seconds: elapsed.Seconds(), PeakRSS: u.PeakRSS})
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}
