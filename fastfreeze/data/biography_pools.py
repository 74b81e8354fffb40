"""Word pools and templates for the synthetic Biography benchmark (our own lists and wording)."""

from __future__ import annotations

import hashlib
import re


def _words(block: str) -> tuple[str, ...]:
    """Split a whitespace-separated block into a tuple, keeping first occurrences only."""
    return tuple(dict.fromkeys(block.split()))


def _entries(block: str) -> tuple[str, ...]:
    """Split a block on ";" and newlines into stripped entries, keeping first occurrences only."""
    return tuple(dict.fromkeys(e.strip() for e in re.split(r"[;\n]", block) if e.strip()))


ATTRIBUTES: tuple[str, ...] = (
    "birth_date",
    "birth_city",
    "university",
    "major",
    "company",
    "company_city",
)

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
# Days 1-28 only, so every (month, day) pair exists in every year; years as in the paper.
DAYS = range(1, 29)
YEARS = range(1900, 2100)

_FIRST = _words("""
Aaron Abigail Ada Adam Adrian Agnes Aiden Alan Albert Alexander Alice Alicia Allison Alma Amanda
Amber Amelia Amy Andrea Andrew Angela Anita Ann Anna Anthony Antonio April Arthur Ashley Audrey
Austin Barbara Benjamin Bernard Beth Betty Beverly Billy Blake Bonnie Brandon Brenda Brian Brittany
Bruce Bryan Caleb Calvin Cameron Carl Carlos Carmen Carol Caroline Carrie Catherine Cecilia Chad
Charles Charlotte Chelsea Cheryl Chloe Christian Christina Christopher Cindy Claire Clara Clarence
Claude Clifford Clyde Cody Colin Connie Connor Craig Crystal Curtis Cynthia Dale Dana Daniel
Danielle Darlene Darren David Dawn Dean Deborah Debra Dennis Derek Diana Diane Dolores Donald Donna
Doris Dorothy Douglas Dylan Earl Edgar Edith Edna Edward Edwin Eileen Elaine Eleanor Elena Eli
Elijah Elizabeth Ella Ellen Elliot Emily Emma Eric Erica Erin Ernest Esther Ethan Eugene Eva Evan
Evelyn Faith Felix Fiona Florence Frances Francis Frank Franklin Fred Gabriel Gail Gary Gavin Gene
Geoffrey George Georgia Gerald Gilbert Gina Glenn Gloria Gordon Grace Gregory Gwen Hannah Harold
Harriet Harry Hazel Heather Hector Helen Henry Herbert Holly Howard Hugh Ian Irene Iris Isaac Isabel
Ivan Jack Jacob Jacqueline Jake James Jamie Jane Janet Janice Jared Jason Jean Jeffrey Jennifer
Jeremy Jesse Jessica Joan Joanna Joel John Jonathan Jordan Joseph Joshua Joyce Judith Julia Julian
Julie Justin Karen Katherine Kathleen Keith Kelly Kenneth Kevin Kimberly Kyle Laura Lauren Lawrence
Leah Leo Leonard Leslie Lillian Linda Lisa Logan Lois Lori Louis Louise Lucas Lucy Luke Lydia Lynn
Madison Malcolm Margaret Maria Marilyn Mark Martha Martin Marvin Mary Mason Matthew Maureen Maya
Megan Melanie Melissa Michael Michelle Mildred Miles Molly Monica Morgan Nancy Naomi Natalie Nathan
Neil Nicholas Nicole Noah Nora Norman Oliver Olivia Oscar Owen Pamela Patricia Patrick Paul Paula
Pauline Peggy Penelope Peter Philip Phyllis Rachel Ralph Randall Raymond Rebecca Regina Renee Rhonda
Richard Rita Robert Roberta Robin Roger Ronald Rose Rosemary Roy Russell Ruth Ryan Samantha Samuel
Sandra Sara Scott Sean Sharon Sheila Shirley Simon Sophia Spencer Stanley Stephanie Stephen Steven
Stuart Susan Sylvia Tammy Teresa Terry Theodore Theresa Thomas Timothy Tina Todd Tracy Travis Troy
Tyler Valerie Vanessa Vera Victor Victoria Vincent Violet Virginia Walter Wanda Warren Wayne Wendy
Wesley William Willie Wyatt Yvonne Zachary Zoe Abel Alfred Alvin Andre Angelo Barry Bennett Bradley
Brent Byron Casey Cecil Chester Clark Dallas Damon Dante Desmond Dominic Duncan Elliott Everett
Frederick Harvey Hugo Jerome Marcus Nathaniel Quinn Sidney Adeline Arnold Bianca Boris Caitlin Eddie
Frida Jocelyn Kristen Lorna Mavis Norma Rodney
""")

_MIDDLE_RAW = _words("""
Ambrose Annette Ansel Archer Ariel Arlo Asher August Aurora Avery Basil Beatrice Bernice Blair
Bridget Brooke Camille Carter Cassandra Celeste Clay Colette Cora Cornelius Daisy Daphne Darcy Delia
Delphine Dexter Dorian Edmund Elise Eloise Emmett Esme Eugenia Ezra Felicity Fern Flora Floyd
Forrest Francine Gareth Garrett Genevieve Gideon Gilda Giles Goldie Graham Greer Griffin Gus Hank
Harlan Harper Hayden Heidi Hollis Homer Hope Horace Hudson Hunter Imogen Ingrid Ira Irving Isla Ivy
Jasper Jed Jewel Joelle Josephine Jude June Juniper Kendall Kent Kira Lana Lars Laurel Leland Lena
Leon Leona Levi Lila Lionel Lorraine Lowell Luther Lyle Mabel Mae Marcel Margot Marian Marion Maxine
Maxwell Meredith Mervin Milo Miranda Mitchell Monroe Morris Murray Myra Myron Nadia Nash Ned Nell
Nelson Nina Noel Nolan Odette Olive Opal Orson Otis Otto Palmer Pearl Percy Perry Phoebe Pierce Piper
Porter Preston Quentin Quincy Rae Raleigh Reed Reid Rex Rhett Rhoda Roland Rosalind Roscoe Rowan
Rufus Rupert Sadie Sage Sawyer Selma Seth Shane Silas Sloane Solomon Stella Sterling Sutton Sybil
Tabitha Tate Thea Thelma Tobias Trent Tristan Tucker Ursula Vaughn Vernon Vivian Wade Wallace Ward
Whitney Willa Winston Wren Xavier Yolanda Yvette Zane Zelda Adele Adrienne Alberta Alec Alden
Alessandra Amos Anders Anton Astrid Augustine Barton Beau Benedict Bertha Blanche Boyd Brady Brock
Bruno Cade Calla Candace Carlton Cassius Cedric Celia Clement Clementine Cole Conrad Corbin Cyrus
Dalton Darius Davis Della Denise Dewey Dolly Donovan Drake Edwina Elias Ellis Elmer Elton Emerson
Emil Enid Ernestine Estelle Etta Fabian Fletcher Flynn Gemma Gerard Gertrude Gladys Greta Gunther
Hattie Hilda Ida Ines Irma Isadora Jonah Kit Lacey Lamar Lance Leopold Liesel Lorenzo Lucille Lucius
Mack Magnus Marcia Marlon Mathilda Maude Maurice Merle Millicent Minerva Murphy Neville Nico Octavia
Ophelia Oren Orville Pascal Phineas Prudence Ramona Randolph Regan Reuben Rocco Rolf Romy Rosalie
Royce Sabrina Salvatore Saul Serena Sheldon Stefan Sullivan Tessa Thaddeus Theo Trudy Ulysses
Valentine Wendell Wilbur Wilfred Winifred Zara Abner Adelaide Agatha Alastair Aldous Alma Alton
Amadeus Anselm Arden Aubrey Augusta Barnaby Bea Benson Bertram Blaise Bram Briar Caspar Cecily
Corinne Cosmo Cressida Dashiell Dawson Delmar Dorothea Dulcie Easton Edison Eldon Elmira Emory Ennis
Ephraim Errol Esmond Evander Fenton Ferris Fitzgerald Florian Garland Gaston Gillian Granger Hartley
Hazelle Henrietta Hester Hollace Hubert Ignatius Isolde Jethro Jolene Kingsley Lavinia Leander
Lorne Lysander Marigold Marlowe Matilda Maximilian Mercer Morrow Nestor Norris Oakley Orrin Osgood
Ottilie Peregrine Philippa Posy Radley Remington Rosamund Saffron Sebastian Septimus Sheridan
Sinclair Stellan Sterne Tamsin Thatcher Torin Truman Una Verity Wilder Winslow Zebediah
""")
# First and middle pools are disjoint, so a name's position says which pool a word came from.
_MIDDLE = tuple(n for n in _MIDDLE_RAW if n not in set(_FIRST))

# Last names are built from English place-name roots and endings (the first 1000 joins are used).
_LAST_ROOTS = _words("""
Ash Black Bram Brad Cald Carl Chad Clif Crom Dal Dun East Ells Fair Glad Gold Gran Green Hal Hart
Hay Hol Kings Lang Lind Lock Mar Mid Mill Nor Oak Pen Rad Red Rock Stan Stone Thorn Wal Whit
Bel Burn Cran Dray Elm Hamp Kel Pres Sel Tal York
""")
_LAST_ENDINGS = _words("""
ford ley ton well wood field more by worth brook stead wick combe dale hurst ridge ham bury croft
hill shaw land man cott mere
""")
# Joins that double a letter ("Ashhill", "Millley") read badly and are skipped.
_LAST = tuple(
    dict.fromkeys(
        root + end
        for root in _LAST_ROOTS
        for end in _LAST_ENDINGS
        if root[-1].lower() != end[0]
    )
)

# Capacity: 400 x 400 x 1000 = 160M full names, far above the paper's 200K people.
FIRST_NAMES: tuple[str, ...] = _FIRST[:400]
MIDDLE_NAMES: tuple[str, ...] = _MIDDLE[:400]
LAST_NAMES: tuple[str, ...] = _LAST[:1000]

# US cities as "City, ST". No periods anywhere in values: bios are split into sentences on ". ".
CITIES: tuple[str, ...] = _entries("""
New York, NY; Los Angeles, CA; Chicago, IL; Houston, TX; Phoenix, AZ; Philadelphia, PA
San Antonio, TX; San Diego, CA; Dallas, TX; San Jose, CA; Austin, TX; Jacksonville, FL
Fort Worth, TX; Columbus, OH; Charlotte, NC; Indianapolis, IN; San Francisco, CA; Seattle, WA
Denver, CO; Oklahoma City, OK; Nashville, TN; Washington, DC; El Paso, TX; Las Vegas, NV
Boston, MA; Detroit, MI; Portland, OR; Louisville, KY; Memphis, TN; Baltimore, MD; Milwaukee, WI
Albuquerque, NM; Tucson, AZ; Fresno, CA; Sacramento, CA; Mesa, AZ; Atlanta, GA; Kansas City, MO
Colorado Springs, CO; Omaha, NE; Raleigh, NC; Miami, FL; Virginia Beach, VA; Long Beach, CA
Oakland, CA; Minneapolis, MN; Bakersfield, CA; Tulsa, OK; Tampa, FL; Arlington, TX; Aurora, CO
Wichita, KS; Cleveland, OH; New Orleans, LA; Henderson, NV; Honolulu, HI; Anaheim, CA; Orlando, FL
Lexington, KY; Stockton, CA; Riverside, CA; Corpus Christi, TX; Irvine, CA; Cincinnati, OH
Santa Ana, CA; Newark, NJ; Saint Paul, MN; Pittsburgh, PA; Greensboro, NC; Durham, NC; Lincoln, NE
Jersey City, NJ; Plano, TX; Anchorage, AK; North Las Vegas, NV; Saint Louis, MO; Madison, WI
Chandler, AZ; Gilbert, AZ; Reno, NV; Buffalo, NY; Chula Vista, CA; Fort Wayne, IN; Lubbock, TX
Toledo, OH; Saint Petersburg, FL; Laredo, TX; Irving, TX; Chesapeake, VA; Glendale, AZ
Winston-Salem, NC; Port Saint Lucie, FL; Scottsdale, AZ; Garland, TX; Boise, ID; Norfolk, VA
Spokane, WA; Richmond, VA; Fremont, CA; Huntsville, AL; Frisco, TX; Cape Coral, FL
Santa Clarita, CA; San Bernardino, CA; Tacoma, WA; Hialeah, FL; Baton Rouge, LA; Modesto, CA
Fontana, CA; McKinney, TX; Moreno Valley, CA; Des Moines, IA; Fayetteville, NC; Salt Lake City, UT
Yonkers, NY; Worcester, MA; Rochester, NY; Sioux Falls, SD; Little Rock, AR; Amarillo, TX
Tallahassee, FL; Grand Prairie, TX; Columbus, GA; Augusta, GA; Peoria, AZ; Oxnard, CA
Knoxville, TN; Overland Park, KS; Birmingham, AL; Grand Rapids, MI; Vancouver, WA; Montgomery, AL
Huntington Beach, CA; Providence, RI; Brownsville, TX; Tempe, AZ; Akron, OH; Glendale, CA
Chattanooga, TN; Fort Lauderdale, FL; Newport News, VA; Mobile, AL; Ontario, CA; Clarksville, TN
Cary, NC; Elk Grove, CA; Shreveport, LA; Eugene, OR; Aurora, IL; Salem, OR; Santa Rosa, CA
Rancho Cucamonga, CA; Pembroke Pines, FL; Fort Collins, CO; Springfield, MO; Oceanside, CA
Garden Grove, CA; Lancaster, CA; Murfreesboro, TN; Palmdale, CA; Corona, CA; Killeen, TX
Salinas, CA; Roseville, CA; Denton, TX; Surprise, AZ; Macon, GA; Paterson, NJ; Lakewood, CO
Hayward, CA; Charleston, SC; Alexandria, VA; Hollywood, FL; Springfield, MA; Kansas City, KS
Sunnyvale, CA; Bellevue, WA; Joliet, IL; Naperville, IL; Escondido, CA; Bridgeport, CT
Savannah, GA; Olathe, KS; Mesquite, TX; Pasadena, TX; McAllen, TX; Rockford, IL; Gainesville, FL
Syracuse, NY; Pomona, CA; Visalia, CA; Thornton, CO; Waco, TX; Jackson, MS; Columbia, SC
Fullerton, CA; Torrance, CA; Victorville, CA; Midland, TX; Orange, CA; Miramar, FL; Hampton, VA
Warren, MI; Stamford, CT; Cedar Rapids, IA; Elizabeth, NJ; Palm Bay, FL; Dayton, OH; New Haven, CT
Coral Springs, FL; Meridian, ID; West Valley City, UT; Pasadena, CA; Lewisville, TX
""")

UNIVERSITIES: tuple[str, ...] = _entries("""
Harvard University; Yale University; Princeton University; Stanford University
Columbia University; Cornell University; Brown University; Dartmouth College; Duke University
Rice University; Vanderbilt University; Emory University; Georgetown University; Tufts University
Tulane University; Boston University; Boston College; Northeastern University
Northwestern University; Johns Hopkins University; Carnegie Mellon University; New York University
Syracuse University; Fordham University; Rutgers University; Temple University; Drexel University
Villanova University; Lehigh University; Purdue University; Indiana University
Ohio State University; Michigan State University; Penn State University; Iowa State University
Kansas State University; Oklahoma State University; Oregon State University
Washington State University; Arizona State University; Colorado State University
Florida State University; Mississippi State University; Utah State University
Montana State University; San Diego State University; Georgia Institute of Technology
Massachusetts Institute of Technology; California Institute of Technology
Rensselaer Polytechnic Institute; Worcester Polytechnic Institute; Stevens Institute of Technology
Illinois Institute of Technology; Rochester Institute of Technology; Virginia Tech
Texas Tech University; Louisiana State University; Auburn University; Clemson University
Baylor University; Brandeis University; Wake Forest University; Southern Methodist University
Texas Christian University; University of Chicago; University of Pennsylvania
University of Michigan; University of Virginia; University of Rochester; University of Notre Dame
University of Southern California; University of Miami; University of Florida
University of Georgia; University of Alabama; University of Arizona; University of Arkansas
University of Colorado Boulder; University of Connecticut; University of Delaware
University of Houston; University of Idaho; University of Illinois Chicago; University of Iowa
University of Kansas; University of Kentucky; University of Louisville; University of Maine
University of Maryland; University of Massachusetts Amherst; University of Minnesota
University of Mississippi; University of Missouri; University of Montana; University of Nebraska
University of Nevada Reno; University of New Hampshire; University of New Mexico
University of North Dakota; University of Oklahoma; University of Oregon; University of Pittsburgh
University of Rhode Island; University of South Carolina; University of South Dakota
University of South Florida; University of Tennessee; University of Texas at Austin
University of Texas at Dallas; University of Texas at El Paso; University of Texas at Arlington
University of Texas at San Antonio; University of Utah; University of Vermont
University of Washington; University of Wisconsin Madison; University of Wyoming
University of Central Florida; University of Cincinnati; University of Dayton
University of Denver; University of Hawaii; University of Tulsa; University of Toledo
University of Akron; University of Memphis; University of Alabama at Birmingham
University of North Texas; University of San Diego; University of San Francisco
University of the Pacific; University of Richmond; University of California Berkeley
University of California Los Angeles; University of California San Diego
University of California Davis; University of California Irvine
University of California Santa Barbara; University of California Santa Cruz
University of California Riverside; University of North Carolina at Chapel Hill
University of North Carolina at Charlotte; North Carolina State University
West Virginia University; Wayne State University; Kent State University; Ball State University
Georgia State University; Portland State University; Wichita State University
Boise State University; Kennesaw State University; Ohio University; Miami University
Marquette University; Loyola University Chicago; DePaul University; Creighton University
Gonzaga University; Seton Hall University; Howard University; George Washington University
American University; Catholic University of America; George Mason University
Old Dominion University; James Madison University; Virginia Commonwealth University
College of William and Mary; Case Western Reserve University; Washington University in Saint Louis
Saint Louis University; Binghamton University; Stony Brook University; University at Buffalo
University at Albany; Clarkson University; Hofstra University; Pace University; Yeshiva University
Northern Arizona University; Northern Illinois University; Southern Illinois University
Western Michigan University; Central Michigan University; Eastern Michigan University
Florida International University; Florida Atlantic University; Texas A&M University
Texas State University; Brigham Young University; University of Nevada Las Vegas
New Mexico State University; Montclair State University; Rowan University; Drake University
Bradley University; Butler University; Xavier University; Duquesne University
Pepperdine University; Santa Clara University; Loyola Marymount University; Chapman University
Mercer University; Samford University; Belmont University; Furman University; Wesleyan University
Williams College; Amherst College; Swarthmore College; Pomona College; Middlebury College
Bowdoin College; Carleton College; Oberlin College; Vassar College
""")

MAJORS: tuple[str, ...] = _entries("""
Accounting; Actuarial Science; Aerospace Engineering; African American Studies
Agricultural Science; Animal Science; Anthropology; Applied Mathematics; Architecture; Art History
Astronomy; Biochemistry; Bioengineering; Biology; Biomedical Engineering; Business Administration
Chemical Engineering; Chemistry; Chinese; Civil Engineering; Classics; Cognitive Science
Communications; Comparative Literature; Computer Engineering; Computer Science
Construction Management; Creative Writing; Criminal Justice; Dance; Data Science; Dental Hygiene
Earth Science; Ecology; Economics; Education; Electrical Engineering; English Literature
Environmental Science; Film Studies; Finance; Fine Arts; Food Science; Forestry; French
Gender Studies; Genetics; Geography; Geology; German; Graphic Design; Health Sciences; History
Hospitality Management; Human Resources; Industrial Design; Industrial Engineering
Information Systems; International Relations; Italian; Japanese; Journalism; Kinesiology
Landscape Architecture; Latin American Studies; Linguistics; Management; Marine Biology; Marketing
Materials Science; Mathematics; Mechanical Engineering; Medieval Studies; Microbiology; Music
Music Theory; Neuroscience; Nuclear Engineering; Nursing; Nutrition; Oceanography
Operations Research; Petroleum Engineering; Pharmacy; Philosophy; Photography; Physical Therapy
Physics; Political Science; Psychology; Public Health; Public Policy; Religious Studies; Robotics
Russian; Social Work; Sociology; Software Engineering; Spanish; Statistics
""")

# Fictional companies (a real name with a made-up HQ would mislead): 50 brand stems, each paired
# with 5 of 10 industry words in a rotating pattern, so no two stems share the same industry set.
_COMPANY_STEMS = _words("""
Alder Amberly Apexon Arclight Bluefin Boldline Brightwater Cascadia Cedarpoint Clearpath Cobalt
Copperleaf Crestview Deepwell Driftwood Eastgate Emberly Evergreen Fairwind Firstlight Foxglove
Granite Greystone Harborline Highmark Ironbridge Juniper Keystone Lakeshore Lumen Maplewood Meridian
Moonstone Northstar Oakhurst Pinecrest Quarrystone Redwood Riverbend Sandpiper Silverline Skyward
Starling Summit Tidewater Trailhead Vantage Westbrook Wildrose Zephyr
""")
_COMPANY_KINDS = _words("Systems Logistics Foods Energy Health Media Motors Capital Labs Textiles")
COMPANIES: tuple[str, ...] = tuple(
    f"{stem} {_COMPANY_KINDS[(i + 3 * j) % len(_COMPANY_KINDS)]}"
    for i, stem in enumerate(_COMPANY_STEMS)
    for j in range(5)
)


def _hq(company: str) -> str:
    digest = hashlib.sha256(company.encode("utf-8")).digest()
    return CITIES[int.from_bytes(digest[:8], "big") % len(CITIES)]


# Each company's HQ: a hash of its name into CITIES, fixed for every seed and config.
COMPANY_HQ: dict[str, str] = {c: _hq(c) for c in COMPANIES}


def company_city(company: str) -> str:
    """The fixed HQ city ("City, ST") of a company from COMPANIES.

    Usage: ``company_city("Northstar Energy")``.
    """
    try:
        return COMPANY_HQ[company]
    except KeyError:
        raise ValueError(f"unknown company {company!r}: use one of biography_pools.COMPANIES") from None

# Biography sentence templates: our own wording, the full name first, the value somewhere after.
# Each template has exactly one {name} and one {value} and ends with a period.
BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{name} was born on {value}.",
        "{name} came into the world on {value}.",
        "{name} has a birth date of {value}.",
        "{name} entered life on {value}.",
        "{name} was welcomed into the world on {value}.",
        "{name} first saw daylight on {value}.",
    ),
    "birth_city": (
        "{name} was born in {value}.",
        "{name} spent the first days of life in {value}.",
        "{name} hails from {value}.",
        "{name} is a native of {value}.",
        "{name} originally comes from {value}.",
        "{name} has {value} as a hometown.",
    ),
    "university": (
        "{name} studied at {value}.",
        "{name} graduated from {value}.",
        "{name} received an education at {value}.",
        "{name} attended {value}.",
        "{name} earned a degree from {value}.",
        "{name} completed higher education at {value}.",
    ),
    "major": (
        "{name} majored in {value}.",
        "{name} chose {value} as a field of study.",
        "{name} specialized in {value}.",
        "{name} pursued a degree in {value}.",
        "{name} concentrated on {value} in college.",
        "{name} devoted the college years to {value}.",
    ),
    "company": (
        "{name} works for {value}.",
        "{name} is employed by {value}.",
        "{name} has a job at {value}.",
        "{name} is on the staff of {value}.",
        "{name} earns a living at {value}.",
        "{name} took a position with {value}.",
    ),
    "company_city": (
        "{name} works in {value}.",
        "{name} commutes to an office in {value}.",
        "{name} is based professionally in {value}.",
        "{name} has a workplace in {value}.",
        "{name} reports to work in {value}.",
        "{name} spends the working week in {value}.",
    ),
}
MAX_TEMPLATES: int = min(len(t) for t in BIO_TEMPLATES.values())

# One fixed question per attribute, in the paper's "...?\nAnswer:" format; the answer follows
# with a leading space.
QUESTION_TEMPLATES: dict[str, str] = {
    "birth_date": "What is the birth date of {name}?\nAnswer:",
    "birth_city": "Which city was {name} born in?\nAnswer:",
    "university": "Which university did {name} attend?\nAnswer:",
    "major": "What field did {name} major in?\nAnswer:",
    "company": "Which company does {name} work for?\nAnswer:",
    "company_city": "In which city does {name} work?\nAnswer:",
}
