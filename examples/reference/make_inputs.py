"""Write the capped-peptide inputs of phipsi_metadynamics.py: inputs/ace_ala_nme.pdb and inputs/ace_gly_nme.pdb.

Both start from openmmtools' alanine-dipeptide PDB (the ff96 test system's coordinates); pdbfixer rebuilds the
hydrogens with amber14 names and, for glycine, applies the mutation ALA-2-GLY. The files are committed, so this needs
to run only to regenerate them (pdbfixer and openmmtools are not needed by the metadynamics script).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from openmm import app

HERE = Path(__file__).resolve().parent


def main() -> None:
    from pdbfixer import PDBFixer

    spec = importlib.util.find_spec("openmmtools")
    pdb = Path(list(spec.submodule_search_locations)[0]) / "data" / "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb"
    ff = app.ForceField("amber14-all.xml")
    for name, mutation in (("ace_ala_nme.pdb", None), ("ace_gly_nme.pdb", "ALA-2-GLY")):
        fixer = PDBFixer(filename=str(pdb))
        if mutation:
            chain = next(fixer.topology.chains()).id
            fixer.applyMutations([mutation], chain)
        fixer.findMissingResidues()
        fixer.findMissingAtoms()
        fixer.addMissingAtoms()
        fixer.addMissingHydrogens(7.0)
        ff.createSystem(fixer.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)  # must parametrise
        out = HERE / "inputs" / name
        out.parent.mkdir(exist_ok=True)
        with open(out, "w") as f:
            app.PDBFile.writeFile(fixer.topology, fixer.positions, f, keepIds=True)
        print(out, fixer.topology.getNumAtoms(), "atoms", [r.name for r in fixer.topology.residues()])


if __name__ == "__main__":
    main()
