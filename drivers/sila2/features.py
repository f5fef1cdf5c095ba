"""SiLA 2 feature definitions (FDL) for the instruments `sdl sila serve` offers, built as text.

Pure functions, no SiLA library: the server parses what they return. Each feature carries one
defined execution error per driver fault kind (``LinkLost``, ``Alarm``, ``LimitRefused``…), so a
client on the other side learns *why* a command failed the way our own drivers say it
(docs/decisions/0003), and ``Cancelled`` for a command stopped through the CancelController.

Our features' originator is ``org.sdl``, category ``instruments``; the two core features we
serve beside them (``LockController`` v1 ships with the library; ``CancelController`` v1 is below)
keep the standard's identifiers so any SiLA client recognises them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

ORIGINATOR = "org.sdl"
CATEGORY = "instruments"

#: Defined execution error identifier -> the driver fault kind it carries (drivers.errors.FaultKind).
FAULT_ERRORS: dict[str, str] = {
    "LinkLost": "link_lost",
    "Timeout": "timeout",
    "Garbled": "garbled",
    "Alarm": "alarm",
    "ProtectiveStop": "protective_stop",
    "LimitRefused": "limit_refused",
    "Busy": "busy",
    "Rejected": "rejected",
    "NotReady": "not_ready",
    "Unrecoverable": "unrecoverable",
    "Empty": "empty",
}
#: The error a command cancelled through the CancelController ends with.
CANCELLED = "Cancelled"
ERROR_OF_FAULT = {fault: identifier for identifier, fault in FAULT_ERRORS.items()}


# -- data types ---------------------------------------------------------------------------------
def basic(kind: str) -> str:
    return f"<DataType><Basic>{kind}</Basic></DataType>"


def list_of(item: str) -> str:
    return f"<DataType><List>{item}</List></DataType>"


def one_of(values: Iterable[str]) -> str:
    """A String constrained to ``values`` (SiLA's Set constraint)."""
    items = "".join(f"<Value>{escape(v)}</Value>" for v in values)
    return (
        "<DataType><Constrained>" + basic("String") + f"<Constraints><Set>{items}</Set></Constraints>"
        "</Constrained></DataType>"
    )


def positive_real(unit: str | None = None) -> str:
    """A Real above zero; ``unit`` is only named in the description (SiLA units need SI factors)."""
    del unit
    return (
        "<DataType><Constrained>" + basic("Real") + "<Constraints><MinimalExclusive>0</MinimalExclusive>"
        "</Constraints></Constrained></DataType>"
    )


# -- feature elements ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Element:
    """A parameter, response or intermediate response: identifier, data type, description."""

    identifier: str
    data_type: str
    description: str

    def xml(self, tag: str) -> str:
        return (
            f"<{tag}><Identifier>{self.identifier}</Identifier><DisplayName>{display(self.identifier)}"
            f"</DisplayName><Description>{escape(self.description)}</Description>{self.data_type}</{tag}>"
        )


@dataclass(frozen=True)
class Command:
    identifier: str
    description: str
    observable: bool = False
    parameters: Sequence[Element] = ()
    responses: Sequence[Element] = ()
    errors: Sequence[str] = tuple(FAULT_ERRORS)

    def xml(self) -> str:
        errors = "".join(f"<Identifier>{e}</Identifier>" for e in self.errors)
        return (
            f"<Command><Identifier>{self.identifier}</Identifier><DisplayName>{display(self.identifier)}"
            f"</DisplayName><Description>{escape(self.description)}</Description>"
            f"<Observable>{'Yes' if self.observable else 'No'}</Observable>"
            + "".join(p.xml("Parameter") for p in self.parameters)
            + "".join(r.xml("Response") for r in self.responses)
            + (f"<DefinedExecutionErrors>{errors}</DefinedExecutionErrors>" if errors else "")
            + "</Command>"
        )


@dataclass(frozen=True)
class Property:
    identifier: str
    description: str
    data_type: str
    observable: bool = False

    def xml(self) -> str:
        return (
            f"<Property><Identifier>{self.identifier}</Identifier><DisplayName>{display(self.identifier)}"
            f"</DisplayName><Description>{escape(self.description)}</Description>"
            f"<Observable>{'Yes' if self.observable else 'No'}</Observable>{self.data_type}</Property>"
        )


@dataclass(frozen=True)
class FeatureSpec:
    identifier: str
    description: str
    commands: Sequence[Command] = ()
    properties: Sequence[Property] = ()
    errors: dict[str, str] = field(default_factory=dict[str, str])

    @property
    def fully_qualified_identifier(self) -> str:
        return f"{ORIGINATOR}/{CATEGORY}/{self.identifier}/v1"

    def fdl(self) -> str:
        errors = {
            **{
                name: f"The instrument failed: {kind.replace('_', ' ')}."
                for name, kind in FAULT_ERRORS.items()
            },
            CANCELLED: "The command was cancelled (CancelController) and the instrument stopped.",
            **self.errors,
        }
        return (
            '<?xml version="1.0" encoding="utf-8" ?>'
            '<Feature SiLA2Version="1.0" FeatureVersion="1.0" MaturityLevel="Draft" '
            f'Originator="{ORIGINATOR}" '
            f'Category="{CATEGORY}" xmlns="http://www.sila-standard.org" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.sila-standard.org '
            'https://gitlab.com/SiLA2/sila_base/raw/master/schema/FeatureDefinition.xsd">'
            f"<Identifier>{self.identifier}</Identifier><DisplayName>{display(self.identifier)}</DisplayName>"
            f"<Description>{escape(self.description)}</Description>"
            + "".join(c.xml() for c in self.commands)
            + "".join(p.xml() for p in self.properties)
            + "".join(
                f"<DefinedExecutionError><Identifier>{name}</Identifier><DisplayName>{display(name)}"
                f"</DisplayName><Description>{escape(text)}</Description></DefinedExecutionError>"
                for name, text in errors.items()
            )
            + "</Feature>"
        )


def display(identifier: str) -> str:
    """``SetIntegrationTime`` -> ``Set Integration Time`` (SiLA display names)."""
    out = ""
    for i, char in enumerate(identifier):
        if char.isupper() and i and not identifier[i - 1].isupper():
            out += " "
        out += char
    return out


_ERRORS_AND_CANCEL = (*FAULT_ERRORS, CANCELLED)


# -- the instruments ----------------------------------------------------------------------------
def pump_feature(pumps: Sequence[str]) -> FeatureSpec:
    """Syringe pumps of one instrument (a line of NE-1000s, a Cavro): dispense, withdraw, rate."""
    pump = Element("Pump", one_of(pumps), f"Which pump of the instrument: one of {', '.join(pumps)}.")
    volume = Element("Volume", positive_real(), "Volume in microlitres (µL).")
    delivered = Element("Delivered", basic("Real"), "Volume the pump moved, in microlitres (µL).")
    return FeatureSpec(
        "SyringePumpController",
        "Syringe pumps: dispense and withdraw volumes at a set rate. The instrument's safety limits apply: "
        "a move outside them is refused with LimitRefused before anything moves.",
        commands=[
            Command(
                "Dispense",
                "Dispense a volume at the pump's rate; progress and remaining time are estimated "
                "from the rate. Cancel it with the CancelController to stop the pump.",
                observable=True,
                parameters=[pump, volume],
                responses=[delivered],
                errors=_ERRORS_AND_CANCEL,
            ),
            Command(
                "Withdraw",
                "Withdraw (aspirate) a volume at the pump's rate.",
                observable=True,
                parameters=[pump, volume],
                responses=[delivered],
                errors=_ERRORS_AND_CANCEL,
            ),
            Command(
                "SetRate",
                "Set the rate the next moves of a pump run at.",
                parameters=[pump, Element("Rate", positive_real(), "Rate in microlitres per minute.")],
            ),
            Command("Stop", "Stop every pump of the instrument now."),
        ],
        properties=[
            Property(
                "Pumps",
                "The pumps of this instrument, in the order the list properties use.",
                list_of(basic("String")),
            ),
            Property(
                "Rates",
                "Each pump's rate in microlitres per minute (order of Pumps).",
                list_of(basic("Real")),
                observable=True,
            ),
            Property(
                "Delivered",
                "Volume each pump moved in its last move, in µL (order of Pumps).",
                list_of(basic("Real")),
                observable=True,
            ),
        ],
    )


def arm_feature(positions: Sequence[str]) -> FeatureSpec:
    """A robot arm that moves between taught positions and carries vessels between stations."""
    position = one_of(positions)
    return FeatureSpec(
        "RobotArmController",
        "A robot arm that moves only to taught positions (joint space) and carries vessels between them.",
        commands=[
            Command(
                "MoveTo",
                "Move to a taught position.",
                observable=True,
                parameters=[Element("Position", position, "A taught position.")],
                errors=_ERRORS_AND_CANCEL,
            ),
            Command(
                "Transfer",
                "Carry the vessel at Source to Destination (pick, move, place).",
                observable=True,
                parameters=[
                    Element("Source", position, "Where the vessel is."),
                    Element("Destination", position, "Where it goes."),
                ],
                errors=_ERRORS_AND_CANCEL,
            ),
            Command("Stop", "Stop the arm now."),
        ],
        properties=[
            Property("Positions", "The taught positions.", list_of(basic("String"))),
            Property(
                "Location",
                "The taught position the arm last reached (empty while moving).",
                basic("String"),
                observable=True,
            ),
        ],
    )


def spectrometer_feature(modes: Sequence[str]) -> FeatureSpec:
    """A spectrometer's acquisition: dark, reference and sample spectra, absorbance against them."""
    spectrum = list_of(basic("Real"))
    return FeatureSpec(
        "SpectrometerController",
        "Acquire spectra. Mode says what the next acquisition measures: 'dark' (light off), 'reference' "
        "(the blank) or 'sample' (absorbance against the last dark and reference); after a dark or a "
        "reference it returns to 'sample'.",
        commands=[
            Command(
                "Acquire",
                "Acquire one spectrum in the current Mode.",
                observable=True,
                responses=[
                    Element("Counts", spectrum, "Counts per pixel."),
                    Element("Absorbance", spectrum, "Absorbance per pixel (NaN for a dark or a reference)."),
                ],
                errors=_ERRORS_AND_CANCEL,
            ),
            Command(
                "SetMode",
                "Choose what the next acquisition measures.",
                parameters=[Element("Mode", one_of(modes), "dark, reference or sample.")],
            ),
            Command(
                "SetIntegrationTime",
                "Set the integration time.",
                parameters=[Element("IntegrationTime", basic("Integer"), "Microseconds.")],
            ),
        ],
        properties=[
            Property("Mode", "What the next acquisition measures.", basic("String"), observable=True),
            Property("Wavelengths", "Wavelength of each pixel, in nanometres.", spectrum),
            Property("IntegrationTime", "Integration time in microseconds.", basic("Integer")),
        ],
    )


#: CancelController v1 (org.silastandard/core.commands), with the standard's identifiers and types.
CANCEL_CONTROLLER = (
    '<?xml version="1.0" encoding="utf-8" ?>'
    '<Feature SiLA2Version="1.0" FeatureVersion="1.0" MaturityLevel="Verified" Originator="org.silastandard" '
    'Category="core.commands" xmlns="http://www.sila-standard.org" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.sila-standard.org '
    'https://gitlab.com/SiLA2/sila_base/raw/master/schema/FeatureDefinition.xsd">'
    "<Identifier>CancelController</Identifier><DisplayName>Cancel Controller</DisplayName>"
    "<Description>Cancel running commands. A cancelled observable command ends with an execution error "
    "that says it was cancelled; the server can take further commands afterwards.</Description>"
    "<Command><Identifier>CancelCommand</Identifier><DisplayName>Cancel Command</DisplayName>"
    "<Description>Cancel the running observable command with this execution UUID.</Description>"
    "<Observable>No</Observable><Parameter><Identifier>CommandExecutionUUID</Identifier>"
    "<DisplayName>Command Execution UUID</DisplayName><Description>The execution to cancel.</Description>"
    "<DataType><DataTypeIdentifier>UUID</DataTypeIdentifier></DataType></Parameter>"
    "<DefinedExecutionErrors><Identifier>InvalidCommandExecutionUUID</Identifier>"
    "<Identifier>OperationNotSupported</Identifier></DefinedExecutionErrors></Command>"
    "<Command><Identifier>CancelAll</Identifier><DisplayName>Cancel All</DisplayName>"
    "<Description>Cancel every running command.</Description><Observable>No</Observable></Command>"
    "<DataTypeDefinition><Identifier>UUID</Identifier><DisplayName>UUID</DisplayName>"
    "<Description>A command execution UUID.</Description><DataType><Constrained>"
    "<DataType><Basic>String</Basic></DataType><Constraints><Length>36</Length>"
    r"<Pattern>[0-9a-f]{8}\-[0-9a-f]{4}\-[0-9a-f]{4}\-[0-9a-f]{4}\-[0-9a-f]{12}</Pattern>"
    "</Constraints></Constrained></DataType></DataTypeDefinition>"
    "<DefinedExecutionError><Identifier>InvalidCommandExecutionUUID</Identifier>"
    "<DisplayName>Invalid Command Execution UUID</DisplayName>"
    "<Description>No command with this execution UUID is running.</Description></DefinedExecutionError>"
    "<DefinedExecutionError><Identifier>OperationNotSupported</Identifier>"
    "<DisplayName>Operation Not Supported</DisplayName>"
    "<Description>This command cannot be cancelled.</Description></DefinedExecutionError>"
    "</Feature>"
)
CANCEL_CONTROLLER_ID = "org.silastandard/core.commands/CancelController/v1"
LOCK_CONTROLLER_ID = "org.silastandard/core/LockController/v1"
SILA_SERVICE_ID = "org.silastandard/core/SiLAService/v1"
