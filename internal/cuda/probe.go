//go:build linux && cgo

package cuda

import (
	"fmt"
	"strings"
)

// Report is what Probe found, for `vgg16 doctor` and for the reason
// --device auto gives when it falls back to the CPU.
type Report struct {
	Driver        LibInfo
	DriverVersion int    // e.g. 13000
	CUDAVersion   string // the driver's CUDA version, e.g. "13.0"
	InitError     string // cuInit's error, when the driver loaded but did not start
	Devices       []DeviceInfo

	BLAS        LibInfo
	BLASVersion string // "13.1.0"
	DNN         LibInfo
	DNNVersion  string // "9.14.0"
	RTC         LibInfo
	RTCVersion  string // "13.0"
}

// LibInfo says where a library was loaded from, or why it was not.
type LibInfo struct {
	Path  string
	Error string
}

// OK reports whether the library loaded.
func (l LibInfo) OK() bool { return l.Error == "" && l.Path != "" }

// DeviceInfo describes one GPU.
type DeviceInfo struct {
	Index        int
	Name         string
	Major, Minor int // compute capability
	SMs          int
	TotalMem     int64 // bytes
	Error        string
}

// Probe loads each library independently (without failing on the first
// missing one) and describes what it found. It never panics.
func Probe() Report {
	var r Report
	dirs := searchDirs()
	if d, err := loadDriver(dirs, true); err != nil {
		r.Driver.Error = err.Error()
	} else {
		r.Driver.Path = d.Path()
		probeDriver(d, &r)
	}
	blas, rtc := toolkitSpecs(r.DriverVersion) // as Load picks them: none newer than the driver
	if b, err := loadBLAS(blas, dirs, true); err != nil {
		r.BLAS.Error = err.Error()
	} else {
		r.BLAS.Path = b.Path()
		if ma, mi, pa, err := b.Property(); err == nil {
			r.BLASVersion = fmt.Sprintf("%d.%d.%d", ma, mi, pa)
		}
	}
	if d, err := loadDNN(dirs, true); err != nil {
		r.DNN.Error = err.Error()
		if d != nil {
			r.DNN.Path = d.Path()
		}
	} else {
		r.DNN.Path = d.Path()
		r.DNNVersion = DNNVersionString(d.Version())
	}
	if rt, err := loadRTC(rtc, dirs, true); err != nil {
		r.RTC.Error = err.Error()
	} else {
		r.RTC.Path = rt.Path()
		if ma, mi, err := rt.Version(); err == nil {
			r.RTCVersion = fmt.Sprintf("%d.%d", ma, mi)
		}
	}
	return r
}

func probeDriver(d *Driver, r *Report) {
	if v, err := d.Version(); err == nil {
		r.DriverVersion = v
		r.CUDAVersion = CUDAVersionString(v)
	}
	if err := d.Init(); err != nil {
		r.InitError = err.Error()
		return
	}
	n, err := d.DeviceCount()
	if err != nil {
		r.InitError = err.Error()
		return
	}
	for i := 0; i < n; i++ {
		r.Devices = append(r.Devices, describeDevice(d, i))
	}
}

func describeDevice(d *Driver, i int) DeviceInfo {
	info := DeviceInfo{Index: i}
	dev, err := d.DeviceGet(i)
	if err == nil {
		info.Name, err = d.DeviceName(dev)
	}
	if err == nil {
		info.Major, err = d.DeviceAttribute(dev, AttrComputeCapabilityMajor)
	}
	if err == nil {
		info.Minor, err = d.DeviceAttribute(dev, AttrComputeCapabilityMinor)
	}
	if err == nil {
		info.SMs, err = d.DeviceAttribute(dev, AttrMultiprocessorCount)
	}
	if err == nil {
		info.TotalMem, err = d.DeviceTotalMem(dev)
	}
	if err != nil {
		info.Error = err.Error()
	}
	return info
}

// Usable reports whether everything the GPU backend needs is there, and
// if not, why not (the first problem).
func (r Report) Usable() (bool, string) {
	switch {
	case !r.Driver.OK():
		return false, r.Driver.Error
	case r.InitError != "":
		return false, r.InitError
	case len(r.Devices) == 0:
		return false, "the CUDA driver found no GPU"
	case !r.BLAS.OK():
		return false, r.BLAS.Error
	case !r.DNN.OK():
		return false, r.DNN.Error
	case !r.RTC.OK():
		return false, r.RTC.Error
	}
	return true, ""
}

// String is the report as `vgg16 doctor` prints it.
func (r Report) String() string {
	var b strings.Builder
	line := func(name string, l LibInfo, version string) {
		if l.OK() {
			fmt.Fprintf(&b, "%-8s %s (%s)\n", name, version, l.Path)
		} else {
			fmt.Fprintf(&b, "%-8s missing: %s\n", name, l.Error)
		}
	}
	line("driver", r.Driver, "CUDA "+r.CUDAVersion)
	if r.InitError != "" {
		fmt.Fprintf(&b, "%-8s %s\n", "", r.InitError)
	}
	for _, d := range r.Devices {
		if d.Error != "" {
			fmt.Fprintf(&b, "gpu %d    %s\n", d.Index, d.Error)
			continue
		}
		prec := "tf32, fp32" // the --precision values it runs
		if d.Major >= 8 {
			prec = "tf32, fp32, bf16"
		}
		fmt.Fprintf(&b, "gpu %d    %s, compute capability %d.%d, %d SMs, %.1f GiB; --precision %s\n", d.Index, d.Name, d.Major, d.Minor, d.SMs, float64(d.TotalMem)/(1<<30), prec)
	}
	line("cuBLAS", r.BLAS, r.BLASVersion)
	line("cuDNN", r.DNN, r.DNNVersion)
	line("NVRTC", r.RTC, r.RTCVersion)
	return b.String() // the verdict, Usable, is the caller's to print
}

// CUDAVersionString turns a driver or runtime version (13000) into "13.0".
func CUDAVersionString(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// DNNVersionString turns cudnnGetVersion's number into "9.14.0".
func DNNVersionString(v int) string {
	if v >= 90000 {
		return fmt.Sprintf("%d.%d.%d", v/10000, v%10000/100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v%1000/100, v%100)
}
