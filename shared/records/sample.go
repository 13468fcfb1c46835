package records

import (
	"fmt"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// Sample returns valid content of kind k, varied by n, referring to the
// records named in parents (by kind; a kind that must have a parent needs
// it). The demo, the benchmarks and the tests generate data with it.
func Sample(k wire.Kind, n int, parents map[wire.Kind]ids.ID) Content {
	date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(n % 3650)).Format(time.DateOnly)
	switch k {
	case wire.KindPatient:
		return Patient{ChartNo: fmt.Sprintf("C-%06d", n), Name: fmt.Sprintf("Patient %d", n), BirthDate: "1980-05-17", Sex: []string{"F", "M", "O"}[n%3]}
	case wire.KindDoctor:
		return Doctor{Name: fmt.Sprintf("Dr. %d", n), Specialty: "orthodontics"}
	case wire.KindUser:
		return User{Username: fmt.Sprintf("user%d", n), Role: "staff", DoctorID: parents[wire.KindDoctor]}
	case wire.KindReportTemplate:
		return ReportTemplate{Name: fmt.Sprintf("Template %d", n), Modality: "PANO", Body: "Findings:\n"}
	case wire.KindSetting:
		return Setting{Key: fmt.Sprintf("viewer.option%d", n), Value: JSONText(fmt.Sprintf(`{"n":%d}`, n))}
	case wire.KindStudy:
		return Study{PatientID: parents[wire.KindPatient], DoctorID: parents[wire.KindDoctor], StudyDate: date, Description: fmt.Sprintf("Study %d", n)}
	case wire.KindImage:
		return Image{StudyID: parents[wire.KindStudy], DoctorID: parents[wire.KindDoctor], Modality: Modalities[n%len(Modalities)],
			StudyDate: date, Tags: []string{"sample", fmt.Sprintf("n%d", n%7)}, FileName: fmt.Sprintf("img%d.dcm", n)}
	case wire.KindCapture:
		return Capture{StudyID: parents[wire.KindStudy], ImageID: parents[wire.KindImage], Title: fmt.Sprintf("Capture %d", n)}
	case wire.KindProjectFile:
		return ProjectFile{StudyID: parents[wire.KindStudy], Name: fmt.Sprintf("plan%d.proj", n), Format: "implant-plan"}
	case wire.KindReport:
		return Report{StudyID: parents[wire.KindStudy], DoctorID: parents[wire.KindDoctor], TemplateID: parents[wire.KindReportTemplate],
			Title: fmt.Sprintf("Report %d", n), Body: "No findings.", Status: "draft"}
	}
	return nil
}
