//! The OVF descriptor (DSP0243, versions 1.x and 2.x): what virtkit reads from it (files,
//! disks with capacities, and per virtual system the CPU count, memory and disk attachments),
//! and the OVF 1.0 envelope it writes for export.
//!
//! Parsing goes through roxmltree (no DTD entity expansion beyond its built-in limits, no
//! external fetches). Elements and attributes are matched by local name, so producers that
//! use other prefixes or leave attributes unqualified still read.

use crate::error::{invalid, Error, Result};
use roxmltree::{Document, Node, ParsingOptions};

/// Longest descriptor accepted (real ones are tens of KiB).
pub const MAX_DESCRIPTOR_LEN: u64 = 16 << 20;
/// More than this many files, disks or systems is not a real appliance.
const MAX_ITEMS: usize = 4096;

/// `http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized`, the disk
/// format URI VMware and VirtualBox use for the disks inside an OVA.
pub const VMDK_STREAM_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// ovf:version of the envelope ("1.0", "2.0"...), when given.
    pub version: Option<String>,
    pub files: Vec<FileRef>,
    pub disks: Vec<Disk>,
    pub systems: Vec<VirtualSystem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRef {
    pub id: String,
    pub href: String,
    pub size: Option<u64>,
    /// ovf:compression ("gzip"): the file is stored compressed in the package.
    pub compression: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    pub id: String,
    pub file_ref: Option<String>,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// ovf:format URI.
    pub format: Option<String>,
    pub populated_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualSystem {
    pub id: String,
    pub name: Option<String>,
    /// OperatingSystemSection: ovf:id (CIM OS type) and its description.
    pub os_id: Option<String>,
    pub os_description: Option<String>,
    pub cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Disk ids (DiskSection ids) attached, in hardware order.
    pub disks: Vec<Attachment>,
    /// Network names of the ethernet adapters.
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    pub disk_id: String,
    /// "ide", "scsi", "sata" or "virtio" from the parent controller's resource type.
    pub bus: Option<String>,
}

fn attr<'a>(n: Node<'a, 'a>, local: &str) -> Option<&'a str> {
    n.attributes()
        .find(|a| a.name() == local)
        .map(|a| a.value())
}

fn children<'a, 'i>(n: Node<'a, 'i>, local: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == local)
}

fn child<'a, 'i>(n: Node<'a, 'i>, local: &'static str) -> Option<Node<'a, 'i>> {
    children(n, local).next()
}

fn text_of(n: Node, local: &'static str) -> Option<String> {
    child(n, local).map(|c| c.text().unwrap_or("").trim().to_string())
}

fn parse_u64(what: &str, s: &str) -> Result<u64> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| Error::Invalid(format!("{what}: '{}' is not a number", s.escape_debug())))
}

/// Multiplier of a DSP0004 programmatic unit ("byte", "byte * 2^30", "byte * 1024",
/// "MegaBytes"...). None when the unit is not a byte unit.
pub fn unit_multiplier(unit: &str) -> Option<u64> {
    let u = unit.trim();
    let named = match u.to_ascii_lowercase().as_str() {
        "" | "byte" | "bytes" => Some(1u64),
        "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let mut parts = u.split('*').map(str::trim);
    let base = parts.next()?;
    if !base.eq_ignore_ascii_case("byte") && !base.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut m: u64 = 1;
    for f in parts {
        let v = if let Some((b, e)) = f.split_once('^') {
            let b: u64 = b.trim().parse().ok()?;
            let e: u32 = e.trim().parse().ok()?;
            b.checked_pow(e)?
        } else {
            f.parse().ok()?
        };
        m = m.checked_mul(v)?;
    }
    Some(m)
}

fn quantity(what: &str, value: &str, unit: Option<&str>) -> Result<u64> {
    let v = parse_u64(what, value)?;
    let unit = unit.unwrap_or("byte");
    let m = unit_multiplier(unit).ok_or_else(|| {
        Error::Unsupported(format!(
            "{what}: unit '{}' is not a byte unit",
            unit.escape_debug()
        ))
    })?;
    v.checked_mul(m)
        .ok_or_else(|| Error::Invalid(format!("{what}: {value} {unit} does not fit in 64 bits")))
}

/// Parses a descriptor.
pub fn parse(text: &str) -> Result<Envelope> {
    if text.len() as u64 > MAX_DESCRIPTOR_LEN {
        return invalid("OVF descriptor is larger than 16 MiB");
    }
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1 << 20,
        ..Default::default()
    };
    let doc = Document::parse_with_options(text, opts)
        .map_err(|e| Error::Invalid(format!("OVF descriptor is not valid XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return invalid(format!(
            "OVF descriptor: root element is '{}', not 'Envelope'",
            root.tag_name().name()
        ));
    }
    let mut env = Envelope {
        version: attr(root, "version").map(str::to_string),
        ..Default::default()
    };
    if let Some(refs) = child(root, "References") {
        for f in children(refs, "File") {
            let id = attr(f, "id").unwrap_or("").to_string();
            let href = attr(f, "href")
                .ok_or_else(|| Error::Invalid(format!("OVF File '{id}' has no ovf:href")))?
                .to_string();
            env.files.push(FileRef {
                id,
                href,
                size: attr(f, "size")
                    .map(|s| parse_u64("File ovf:size", s))
                    .transpose()?,
                compression: attr(f, "compression")
                    .filter(|c| !c.is_empty() && *c != "identity")
                    .map(str::to_string),
            });
            if env.files.len() > MAX_ITEMS {
                return invalid("OVF descriptor lists too many files");
            }
        }
    }
    for sec in root
        .children()
        .filter(|c| c.is_element())
        .filter(|c| matches!(c.tag_name().name(), "DiskSection" | "Section"))
    {
        if sec.tag_name().name() == "Section"
            && !attr(sec, "type").is_some_and(|t| t.ends_with("DiskSection_Type"))
        {
            continue;
        }
        for d in children(sec, "Disk") {
            let id = attr(d, "diskId").unwrap_or("").to_string();
            let what = format!("Disk '{id}' ovf:capacity");
            let cap = attr(d, "capacity")
                .ok_or_else(|| Error::Invalid(format!("OVF Disk '{id}' has no ovf:capacity")))?;
            if cap.trim_start().starts_with("${") {
                return Err(Error::Unsupported(format!(
                    "{what} refers to a property ({cap}); property-sized disks are not supported"
                )));
            }
            env.disks.push(Disk {
                capacity: quantity(&what, cap, attr(d, "capacityAllocationUnits"))?,
                id,
                file_ref: attr(d, "fileRef").map(str::to_string),
                format: attr(d, "format").map(str::to_string),
                populated_size: attr(d, "populatedSize").and_then(|s| s.trim().parse::<u64>().ok()),
            });
            if env.disks.len() > MAX_ITEMS {
                return invalid("OVF descriptor lists too many disks");
            }
        }
    }
    for vs in root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "VirtualSystem")
    {
        env.systems.push(parse_system(vs)?);
        if env.systems.len() > MAX_ITEMS {
            return invalid("OVF descriptor lists too many virtual systems");
        }
    }
    validate(&env)?;
    Ok(env)
}

fn parse_system(vs: Node) -> Result<VirtualSystem> {
    let mut sys = VirtualSystem {
        id: attr(vs, "id").unwrap_or("").to_string(),
        name: text_of(vs, "Name").filter(|s| !s.is_empty()),
        ..Default::default()
    };
    if let Some(os) = child(vs, "OperatingSystemSection") {
        sys.os_id = attr(os, "id").map(str::to_string);
        sys.os_description = text_of(os, "Description").filter(|s| !s.is_empty());
    }
    let Some(hw) = child(vs, "VirtualHardwareSection") else {
        return Ok(sys);
    };
    // InstanceID -> bus of every controller, for the disks' Parent references.
    let items: Vec<Node> = hw
        .children()
        .filter(|c| {
            c.is_element()
                && matches!(
                    c.tag_name().name(),
                    "Item" | "StorageItem" | "EthernetPortItem"
                )
        })
        .collect();
    let field = |it: Node, local: &'static str| text_of(it, local);
    let mut controllers = Vec::new();
    for it in &items {
        let rt = field(*it, "ResourceType").unwrap_or_default();
        let bus = match rt.as_str() {
            "5" => Some("ide"),
            "6" => Some("scsi"),
            "20" => Some("sata"),
            _ => None,
        };
        if let (Some(b), Some(id)) = (bus, field(*it, "InstanceID")) {
            controllers.push((id, b));
        }
    }
    for it in &items {
        let rt = field(*it, "ResourceType").unwrap_or_default();
        match rt.as_str() {
            "3" => {
                if let Some(q) = field(*it, "VirtualQuantity") {
                    sys.cpus = Some(parse_u64("CPU VirtualQuantity", &q)?);
                }
            }
            "4" => {
                if let Some(q) = field(*it, "VirtualQuantity") {
                    // Memory without AllocationUnits is in MiB by long-standing convention.
                    let unit = field(*it, "AllocationUnits");
                    sys.memory_bytes = Some(quantity(
                        "Memory VirtualQuantity",
                        &q,
                        Some(unit.as_deref().unwrap_or("byte * 2^20")),
                    )?);
                }
            }
            "17" => {
                let hr = field(*it, "HostResource").unwrap_or_default();
                // "ovf:/disk/vmdisk1" (1.0) or "/disk/vmdisk1"; "ovf:/file/..." is a file.
                if let Some(pos) = hr.find("/disk/") {
                    let parent = field(*it, "Parent");
                    sys.disks.push(Attachment {
                        disk_id: hr[pos + 6..].to_string(),
                        bus: parent.and_then(|p| {
                            controllers
                                .iter()
                                .find(|(id, _)| *id == p)
                                .map(|(_, b)| b.to_string())
                        }),
                    });
                }
            }
            "10" => {
                if let Some(c) = field(*it, "Connection").filter(|c| !c.is_empty()) {
                    sys.networks.push(c);
                }
            }
            _ => {}
        }
        if sys.disks.len() > MAX_ITEMS || sys.networks.len() > MAX_ITEMS {
            return invalid("OVF virtual system has too many devices");
        }
    }
    Ok(sys)
}

/// Cross-references: unique ids, disks naming files that exist, file names that are plain
/// names inside the package.
fn validate(env: &Envelope) -> Result<()> {
    for (i, f) in env.files.iter().enumerate() {
        check_package_name(&f.href)?;
        if env.files[..i].iter().any(|g| g.id == f.id) {
            return invalid(format!(
                "OVF File id '{}' is used twice",
                f.id.escape_debug()
            ));
        }
    }
    for (i, d) in env.disks.iter().enumerate() {
        if env.disks[..i].iter().any(|e| e.id == d.id) {
            return invalid(format!(
                "OVF Disk id '{}' is used twice",
                d.id.escape_debug()
            ));
        }
        if let Some(r) = &d.file_ref {
            if !env.files.iter().any(|f| &f.id == r) {
                return invalid(format!(
                    "OVF Disk '{}' refers to file '{}', which References does not list",
                    d.id.escape_debug(),
                    r.escape_debug()
                ));
            }
        }
    }
    for s in &env.systems {
        for a in &s.disks {
            if !env.disks.iter().any(|d| d.id == a.disk_id) {
                return invalid(format!(
                    "OVF virtual system '{}' attaches disk '{}', which DiskSection does not list",
                    s.id.escape_debug(),
                    a.disk_id.escape_debug()
                ));
            }
        }
    }
    Ok(())
}

/// A file of a package is a plain name: no directories, no "..", nothing absolute, no URL.
/// Checked before anything is read or written under that name.
pub fn check_package_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.contains("://")
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "'{}' is not a plain file name inside the package",
            name.escape_debug()
        ))
    }
}

/// What an exported appliance holds.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub disks: Vec<ExportDisk>,
}

#[derive(Debug, Clone)]
pub struct ExportDisk {
    /// File name inside the package.
    pub href: String,
    /// Size of that file.
    pub file_size: u64,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes of guest data (ovf:populatedSize), when known.
    pub populated_size: Option<u64>,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// An OVF 1.0 envelope for `spec`: one virtual system of hardware family vmx-07 (what both
/// VMware's and VirtualBox's importers accept) with the CPUs, memory, an LSI Logic SCSI
/// controller holding the disks in order, and an E1000 adapter on a network "VM Network".
/// The RASD elements of each Item are in the alphabetical order the CIM schema requires.
pub fn write(spec: &ExportSpec) -> String {
    let n = esc(&spec.name);
    let mut s = String::new();
    s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    s += "<Envelope ovf:version=\"1.0\" xml:lang=\"en-US\" vmw:buildId=\"virtkit\" xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
          xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\" \
          xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" \
          xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
          xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
          xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
          xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n";
    s += "  <References>\n";
    for (i, d) in spec.disks.iter().enumerate() {
        s += &format!(
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>\n",
            esc(&d.href),
            i + 1,
            d.file_size
        );
    }
    s += "  </References>\n";
    s += "  <DiskSection>\n    <Info>Virtual disk information</Info>\n";
    for (i, d) in spec.disks.iter().enumerate() {
        s += &format!(
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{}\" ovf:fileRef=\"file{}\" ovf:format=\"{}\"{}/>\n",
            d.capacity,
            i + 1,
            i + 1,
            VMDK_STREAM_URI,
            d.populated_size
                .map(|p| format!(" ovf:populatedSize=\"{p}\""))
                .unwrap_or_default()
        );
    }
    s += "  </DiskSection>\n";
    s += "  <NetworkSection>\n    <Info>The list of logical networks</Info>\n";
    s += "    <Network ovf:name=\"VM Network\">\n      <Description>The VM Network network</Description>\n    </Network>\n";
    s += "  </NetworkSection>\n";
    s += &format!("  <VirtualSystem ovf:id=\"{n}\">\n");
    s += "    <Info>A virtual machine</Info>\n";
    s += &format!("    <Name>{n}</Name>\n");
    s += "    <OperatingSystemSection ovf:id=\"101\" vmw:osType=\"otherLinux64Guest\">\n";
    s += "      <Info>The kind of installed guest operating system</Info>\n";
    s += "      <Description>Other Linux (64-bit)</Description>\n";
    s += "    </OperatingSystemSection>\n";
    s += "    <VirtualHardwareSection>\n";
    s += "      <Info>Virtual hardware requirements</Info>\n";
    s += "      <System>\n";
    s += "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n";
    s += "        <vssd:InstanceID>0</vssd:InstanceID>\n";
    s += &format!("        <vssd:VirtualSystemIdentifier>{n}</vssd:VirtualSystemIdentifier>\n");
    s += "        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>\n";
    s += "      </System>\n";
    let item = |fields: &[(&str, String)]| {
        let mut t = String::from("      <Item>\n");
        for (k, v) in fields {
            t += &format!("        <rasd:{k}>{}</rasd:{k}>\n", esc(v));
        }
        t + "      </Item>\n"
    };
    let cpus = spec.cpus;
    s += &item(&[
        ("AllocationUnits", "hertz * 10^6".into()),
        ("Description", "Number of Virtual CPUs".into()),
        ("ElementName", format!("{cpus} virtual CPU(s)")),
        ("InstanceID", "1".into()),
        ("ResourceType", "3".into()),
        ("VirtualQuantity", cpus.to_string()),
    ]);
    let mem = spec.memory_mib;
    s += &item(&[
        ("AllocationUnits", "byte * 2^20".into()),
        ("Description", "Memory Size".into()),
        ("ElementName", format!("{mem}MB of memory")),
        ("InstanceID", "2".into()),
        ("ResourceType", "4".into()),
        ("VirtualQuantity", mem.to_string()),
    ]);
    s += &item(&[
        ("Address", "0".into()),
        ("Description", "SCSI Controller".into()),
        ("ElementName", "SCSI Controller 0".into()),
        ("InstanceID", "3".into()),
        ("ResourceSubType", "lsilogic".into()),
        ("ResourceType", "6".into()),
    ]);
    let mut id = 4;
    for (i, _) in spec.disks.iter().enumerate() {
        // SCSI id 7 is the controller's own.
        let unit = if i >= 7 { i + 1 } else { i };
        s += &item(&[
            ("AddressOnParent", unit.to_string()),
            ("ElementName", format!("Hard Disk {}", i + 1)),
            ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
            ("InstanceID", id.to_string()),
            ("Parent", "3".into()),
            ("ResourceType", "17".into()),
        ]);
        id += 1;
    }
    s += &item(&[
        ("AddressOnParent", "7".into()),
        ("AutomaticAllocation", "true".into()),
        ("Connection", "VM Network".into()),
        (
            "Description",
            "E1000 ethernet adapter on \"VM Network\"".into(),
        ),
        ("ElementName", "Network adapter 1".into()),
        ("InstanceID", id.to_string()),
        ("ResourceSubType", "E1000".into()),
        ("ResourceType", "10".into()),
    ]);
    s += "    </VirtualHardwareSection>\n";
    s += "  </VirtualSystem>\n";
    s += "</Envelope>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const VBOX: &str = r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="deb-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="a"/>
  </DiskSection>
  <VirtualSystem ovf:id="deb">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>deb</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:InstanceID>10</rasd:InstanceID>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

    #[test]
    fn reads_a_virtualbox_descriptor() {
        let e = parse(VBOX).unwrap();
        assert_eq!(e.version.as_deref(), Some("1.0"));
        assert_eq!(e.files[0].href, "deb-disk001.vmdk");
        assert_eq!(e.disks[0].capacity, 8 << 30);
        assert_eq!(e.disks[0].format.as_deref(), Some(VMDK_STREAM_URI));
        let s = &e.systems[0];
        assert_eq!(s.id, "deb");
        assert_eq!(s.cpus, Some(2));
        assert_eq!(s.memory_bytes, Some(2048 << 20));
        assert_eq!(s.os_description.as_deref(), Some("Debian_64"));
        assert_eq!(
            s.disks,
            vec![Attachment {
                disk_id: "vmdisk1".into(),
                bus: Some("sata".into())
            }]
        );
        assert_eq!(s.networks, vec!["NAT".to_string()]);
    }

    #[test]
    fn written_descriptor_reads_back() {
        let spec = ExportSpec {
            name: "web <1> & \"db\"".into(),
            cpus: 4,
            memory_mib: 3072,
            disks: (0..9)
                .map(|i| ExportDisk {
                    href: format!("d{i}.vmdk"),
                    file_size: 1000 + i,
                    capacity: (i + 1) << 30,
                    populated_size: Some(77),
                })
                .collect(),
        };
        let e = parse(&write(&spec)).unwrap();
        assert_eq!(e.files.len(), 9);
        assert_eq!(e.files[3].size, Some(1003));
        assert_eq!(e.disks[8].capacity, 9 << 30);
        let s = &e.systems[0];
        assert_eq!(s.name.as_deref(), Some("web <1> & \"db\""));
        assert_eq!(s.cpus, Some(4));
        assert_eq!(s.memory_bytes, Some(3072 << 20));
        assert_eq!(s.disks.len(), 9);
        assert!(s.disks.iter().all(|a| a.bus.as_deref() == Some("scsi")));
    }

    #[test]
    fn units() {
        assert_eq!(unit_multiplier("byte * 2^30"), Some(1 << 30));
        assert_eq!(unit_multiplier("byte*1024*1024"), Some(1 << 20));
        assert_eq!(unit_multiplier("byte * 10^3"), Some(1000));
        assert_eq!(unit_multiplier("GigaBytes"), Some(1 << 30));
        assert_eq!(unit_multiplier("byte * 2^64"), None);
        assert_eq!(unit_multiplier("hertz * 10^6"), None);
    }

    #[test]
    fn hostile_descriptors_are_errors() {
        let cases = [
            "not xml".to_string(),
            "<Foo/>".to_string(),
            VBOX.replace("deb-disk001.vmdk", "../../etc/passwd"),
            VBOX.replace("deb-disk001.vmdk", "/etc/passwd"),
            VBOX.replace("ovf:capacity=\"8\"", "ovf:capacity=\"99999999999999\""),
            VBOX.replace("ovf:fileRef=\"file1\"", "ovf:fileRef=\"nope\""),
            VBOX.replace("/disk/vmdisk1", "/disk/other"),
            VBOX.replace(
                "<?xml version=\"1.0\"?>",
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>",
            ),
        ];
        for c in &cases {
            assert!(parse(c).is_err(), "accepted: {}", &c[..c.len().min(300)]);
        }
    }
}
