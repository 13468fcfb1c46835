package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// cloudIDs lists the ids of a collection's live records in the cloud.
func cloudIDs(t *testing.T, cloud side, collection string) []string {
	t.Helper()
	var out []string
	after := ""
	for {
		var pg struct {
			Items []record `json:"items"`
			Next  string   `json:"next"`
		}
		if code := call(t, "GET", cloud.prefix+collection+"?limit=1000&after="+after, cloud.token, nil, &pg); code != 200 {
			t.Fatalf("list %s: %d", collection, code)
		}
		for _, r := range pg.Items {
			out = append(out, r.ID)
		}
		if pg.Next == "" {
			sort.Strings(out)
			return out
		}
		after = pg.Next
	}
}

// scopeClinic is a clinic with two studies (one recent, one from three
// years ago), each with an image of every modality in mods, each image
// with its original file.
type scopeClinic struct {
	c              *clinic
	cloud          side
	recent, old    string
	images         map[string][]string // study id → image ids
	modality, file map[string]string   // image id → modality, sha256
}

func newScopeClinic(t *testing.T, s *stack, name string, scope map[string]any) *scopeClinic {
	t.Helper()
	sc := &scopeClinic{c: s.enroll(t, name), images: map[string][]string{}, modality: map[string]string{}, file: map[string]string{}}
	dir := t.TempDir()
	s.startLocal(t, sc.c, dir)
	sc.cloud = cloudSide(s.cloud[0], sc.c)
	if code := call(t, "PUT", sc.c.base+"/v1/scope", "", scope, nil); code != 200 {
		t.Fatalf("set scope: %d", code)
	}
	var p patient
	if code := call(t, "POST", sc.c.base+"/v1/patients", "", save("", map[string]string{"name": "Scope Patient"}), &p); code != 201 {
		t.Fatalf("create patient: %d", code)
	}
	now := time.Now()
	for i, date := range []string{now.AddDate(0, 0, -3).Format(time.DateOnly), now.AddDate(-3, 0, 0).Format(time.DateOnly)} {
		var st record
		if code := call(t, "POST", sc.c.base+"/v1/studies", "", map[string]any{"data": map[string]any{"patient_id": p.ID, "study_date": date}}, &st); code != 201 {
			t.Fatalf("create study: %d", code)
		}
		if i == 0 {
			sc.recent = st.ID
		} else {
			sc.old = st.ID
		}
		for _, mod := range []string{"PANO", "CBCT", "PHOTO"} {
			var img record
			if code := call(t, "POST", sc.c.base+"/v1/images", "", map[string]any{"data": map[string]any{
				"study_id": st.ID, "modality": mod, "study_date": date}}, &img); code != 201 {
				t.Fatalf("create image: %d", code)
			}
			path, sum := randomFile(t, dir, 3000+len(sc.file)*11)
			if code := call(t, "POST", sc.c.base+"/v1/files", "", map[string]any{"path": path, "image_id": img.ID}, nil); code != 202 {
				t.Fatalf("import file: %d", code)
			}
			sc.images[st.ID] = append(sc.images[st.ID], img.ID)
			sc.modality[img.ID], sc.file[img.ID] = mod, sum
		}
	}
	return sc
}

// check waits until the cloud holds exactly the studies and images want
// says, with the files of those images and none of the others'.
func (sc *scopeClinic) check(t *testing.T, wantStudies []string, wantImage func(study, image string) bool) {
	t.Helper()
	var wantImages []string
	for st, imgs := range sc.images {
		for _, img := range imgs {
			if wantImage(st, img) {
				wantImages = append(wantImages, img)
			}
		}
	}
	sort.Strings(wantImages)
	sort.Strings(wantStudies)
	testenv.CheckFor(t, 90*time.Second, 500*time.Millisecond, func() error {
		var st localStatus
		call(t, "GET", sc.c.base+"/v1/status", "", nil, &st)
		if st.Pending != 0 || st.Outbox != 0 {
			return fmt.Errorf("clinic status %+v", st)
		}
		if got := cloudIDs(t, sc.cloud, "studies"); !slices.Equal(got, wantStudies) {
			return fmt.Errorf("cloud studies %v, want %v", got, wantStudies)
		}
		if got := cloudIDs(t, sc.cloud, "images"); !slices.Equal(got, wantImages) {
			return fmt.Errorf("cloud images %v, want %v", got, wantImages)
		}
		for _, img := range wantImages {
			var f struct{ State string }
			if code := call(t, "GET", sc.cloud.prefix+"files/"+sc.file[img], sc.cloud.token, nil, &f); code != 200 || f.State != "present" {
				return fmt.Errorf("file of image %s in the cloud: %d %s", img, code, f.State)
			}
		}
		return nil
	})
	// The files of images outside the scope never left the clinic, and the
	// clinic says why.
	for img, sum := range sc.file {
		if slices.Contains(wantImages, img) {
			continue
		}
		if code := call(t, "GET", sc.cloud.prefix+"files/"+sum, sc.cloud.token, nil, nil); code != 404 {
			t.Fatalf("the file of out-of-scope image %s (%s) is in the cloud: %d", img, sc.modality[img], code)
		}
		var l struct{ Items []transferRow }
		call(t, "GET", sc.c.base+"/v1/files?sha256="+sum, "", nil, &l)
		if len(l.Items) != 1 || l.Items[0].State != "queued" || l.Items[0].Reason == "" {
			t.Fatalf("transfer of out-of-scope file: %+v, want queued with a reason", l.Items)
		}
	}
}

// TestScopeExactSets (M4, issue 6): a scope by modality and a scope by
// period each sync exactly the records they cover, with exactly those
// records' files; the rest stays in the clinic, files included.
func TestScopeExactSets(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)

	byModality := newScopeClinic(t, s, "Modality Scope Dental", map[string]any{"modalities": []string{"CBCT"}})
	byModality.check(t, []string{byModality.recent, byModality.old}, func(_, img string) bool {
		return byModality.modality[img] == "CBCT"
	})

	byPeriod := newScopeClinic(t, s, "Period Scope Dental", map[string]any{"last_days": 365})
	byPeriod.check(t, []string{byPeriod.recent}, func(study, _ string) bool { return study == byPeriod.recent })

	// Clinic IT reads and changes the scope with the CLI, which says what
	// narrowing does.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(s.localBin, args...)
		cmd.Env = append(os.Environ(), byModality.c.proc.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sc-local %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := cli("scope"); !strings.Contains(out, "modalities   CBCT") || !strings.Contains(out, "narrowing it does not remove") {
		t.Fatalf("sc-local scope:\n%s", out)
	}
	if out := cli("scope", "set", "-modalities", "CBCT,PANO", "-last-days", "30"); !strings.Contains(out, "studies of the last 30 days") {
		t.Fatalf("sc-local scope set:\n%s", out)
	}
	var got struct {
		Modalities []string `json:"modalities"`
		LastDays   int      `json:"last_days"`
	}
	call(t, "GET", byModality.c.base+"/v1/scope", "", nil, &got)
	if !slices.Equal(got.Modalities, []string{"CBCT", "PANO"}) || got.LastDays != 30 {
		t.Fatalf("scope after the CLI: %+v", got)
	}
}
