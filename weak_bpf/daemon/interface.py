"""weak-bpf-progsd's D-Bus names and interface (SPEC §7)."""

BUS_NAME = "org.weakbpf.Manager1"
OBJECT_PATH = "/org/weakbpf/Manager1"
INTERFACE = "org.weakbpf.Manager1"
ERROR_PREFIX = f"{INTERFACE}.Error."

# Also installed as usr/share/dbus-1/interfaces/org.weakbpf.Manager1.xml (a test compares them).
INTERFACE_XML = """<node>
  <interface name="org.weakbpf.Manager1">
    <method name="Audit">
      <arg name="kernels" type="as" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="Explain">
      <arg name="object" type="s" direction="in"/>
      <arg name="kernel" type="s" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="AddKernel">
      <arg name="kernel" type="s" direction="in"/>
      <arg name="dry_run" type="b" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="RemoveKernel">
      <arg name="kernel" type="s" direction="in"/>
      <arg name="dry_run" type="b" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <method name="Verify">
      <arg name="kernels" type="as" direction="in"/>
      <arg name="json" type="s" direction="out"/>
    </method>
    <property name="Kernels" type="as" access="read"/>
    <property name="Programs" type="as" access="read"/>
    <signal name="Resolved">
      <arg name="kernel" type="s"/>
      <arg name="summary_json" type="s"/>
    </signal>
    <signal name="VerifyProgress">
      <arg name="message" type="s"/>
    </signal>
    <signal name="Verified">
      <arg name="kernel" type="s"/>
      <arg name="json" type="s"/>
    </signal>
  </interface>
</node>
"""
